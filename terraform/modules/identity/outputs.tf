output "session_role_arn" {
  description = "Role of every user's ServiceAccount, by EKS Pod Identity (cluster settings' identity.per_user_role_arn)"
  value       = aws_iam_role.session.arn
}

output "hub_role_arn" {
  description = "Role of the hub's ServiceAccount, by EKS Pod Identity (it associates users' ServiceAccounts)"
  value       = aws_iam_role.hub.arn
}

output "mlflow_role_arn" {
  description = "Role MLflow's ServiceAccount is annotated with"
  value       = aws_iam_role.this["mlflow"].arn
}

output "mlflow_service_account" {
  description = "ServiceAccount the MLflow role trusts"
  value       = var.mlflow_service_account
}
