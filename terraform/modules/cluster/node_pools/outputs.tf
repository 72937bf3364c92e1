output "pools" {
  description = "Pool name -> {profiles, labels, taints [{key, value, effect, eks_effect}], gpu}, derived from the profiles"
  value       = local.pools
}

output "default_pool_labels" {
  description = "Labels of the untainted default pool: the chart's own pods (hub, proxy, user scheduler) select it"
  value       = { (var.pool_label) = var.default_pool }
}

output "profile_pools" {
  description = "Profile name -> the pool it runs on"
  value       = local.pool_of
}
