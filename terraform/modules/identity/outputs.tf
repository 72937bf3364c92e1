output "session_role_arn" {
  description = "Role the sessions' ServiceAccount is annotated with (cluster settings' identity.role_arn)"
  value       = aws_iam_role.this["session"].arn
}

output "session_service_account" {
  description = "ServiceAccount the session role trusts"
  value       = var.session_service_account
}

output "mlflow_role_arn" {
  description = "Role MLflow's ServiceAccount is annotated with"
  value       = aws_iam_role.this["mlflow"].arn
}

output "mlflow_service_account" {
  description = "ServiceAccount the MLflow role trusts"
  value       = var.mlflow_service_account
}
