output "pools" {
  description = "Pool name -> {profiles, labels, taints [{key, value, effect, eks_effect}], gpu}, derived from the profiles"
  value       = local.pools

  precondition {
    condition     = alltrue([for pool, configs in local.sharing : length(configs) <= 1])
    error_message = "A pool's nodes take one device plugin configuration, but these pools mix MIG slices and time-sliced shares: ${join(", ", sort([for pool, configs in local.sharing : pool if length(configs) > 1]))}. Give the MIG and the shared profiles different pools (node_selector atelier.dev/pool)."
  }
}

output "default_pool_labels" {
  description = "Labels of the untainted default pool: the chart's own pods (hub, proxy, user scheduler) select it"
  value       = { (var.pool_label) = var.default_pool }
}

output "profile_pools" {
  description = "Profile name -> the pool it runs on"
  value       = local.pool_of
}
