output "image_repositories" {
  description = "Where to push the hub and MLflow images (ECR repository URLs)"
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "cluster_name" {
  description = "EKS cluster: `aws eks update-kubeconfig --name <this> --region <region>`"
  value       = module.cluster.cluster_name
}

output "node_pools" {
  description = "Each node group's labels and taints, as derived from profiles/"
  value       = module.cluster.node_pools
}

output "shared_bucket" {
  description = "The bucket every session shares (ATELIER_SHARED_BUCKET)"
  value       = module.storage.shared_bucket
}

output "mlflow_tracking_uri" {
  description = "MLflow's tracking server inside the cluster"
  value       = module.atelier.mlflow_tracking_uri
}

output "session_role_arn" {
  description = "The role sessions act as in AWS"
  value       = module.identity.session_role_arn
}

output "namespace" {
  description = "Namespace of the hub: `kubectl -n <this> get svc proxy-public` gives the login address"
  value       = module.atelier.namespace
}
