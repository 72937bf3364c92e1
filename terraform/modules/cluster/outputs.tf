output "cluster_name" {
  description = "Name of the EKS cluster"
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API"
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the Kubernetes API"
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS puts on the control plane and every managed node (the database admits it)"
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (IRSA trust)"
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_provider" {
  description = "The OIDC issuer without https://, the prefix of IRSA condition keys"
  value       = trimprefix(local.oidc_issuer, "https://")
}

output "node_pools" {
  description = "Pool -> {profiles, labels, taints, gpu}: what each node group carries, derived from profiles/"
  value       = local.pools
}

output "core_node_selector" {
  description = "Node selector of the untainted default pool, where the chart's own pods run (cluster settings' node_pools.core)"
  value       = module.node_pools.default_pool_labels
}

output "node_groups" {
  description = "Pool -> ID of its EKS managed node group"
  value       = { for pool, ng in aws_eks_node_group.this : pool => ng.id }
}
