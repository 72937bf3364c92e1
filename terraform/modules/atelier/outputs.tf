output "release_name" {
  description = "Name of the Helm release of the hub"
  value       = helm_release.this.name
}

output "namespace" {
  description = "Namespace of the hub, the sessions and MLflow"
  value       = kubernetes_namespace_v1.atelier.metadata[0].name
}

output "mlflow_tracking_uri" {
  description = "URL of MLflow's tracking server inside the cluster: only the hub pod's MLflow front reaches it (users and sessions reach MLflow at PUBLIC_URL/services/mlflow, behind the hub's login)"
  value       = local.mlflow_url
}

output "values" {
  description = "The chart values `atelier render values` made from this deployment's outputs"
  value       = data.external.values.result.values
}

output "cluster_settings" {
  description = "The cluster settings the values were rendered from"
  value       = module.values.cluster_settings
}
