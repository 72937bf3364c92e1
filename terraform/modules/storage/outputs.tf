output "shared_bucket" {
  description = "Name of the shared bucket (deployment settings' services.s3.bucket)"
  value       = aws_s3_bucket.this["shared"].id
}

output "shared_bucket_arn" {
  description = "ARN of the shared bucket"
  value       = aws_s3_bucket.this["shared"].arn
}

output "shared_kms_key_arn" {
  description = "ARN of the key that encrypts the shared bucket"
  value       = aws_kms_key.this["shared"].arn
}

output "mlflow_bucket" {
  description = "Name of MLflow's artifact bucket"
  value       = aws_s3_bucket.this["mlflow"].id
}

output "mlflow_bucket_arn" {
  description = "ARN of MLflow's artifact bucket"
  value       = aws_s3_bucket.this["mlflow"].arn
}

output "mlflow_kms_key_arn" {
  description = "ARN of the key that encrypts MLflow's bucket, database and database secret"
  value       = aws_kms_key.this["mlflow"].arn
}

output "db_address" {
  description = "Host name of MLflow's PostgreSQL"
  value       = aws_db_instance.mlflow.address
}

output "db_port" {
  description = "Port of MLflow's PostgreSQL"
  value       = aws_db_instance.mlflow.port
}

output "db_name" {
  description = "Database MLflow uses"
  value       = aws_db_instance.mlflow.db_name
}

output "db_username" {
  description = "Database user MLflow logs in as"
  value       = aws_db_instance.mlflow.username
}

output "db_resource_id" {
  description = "RDS resource ID (the `rds-db:connect` ARN names it)"
  value       = aws_db_instance.mlflow.resource_id
}

output "db_secret_arn" {
  description = "Secrets Manager secret RDS keeps the database password in"
  value       = aws_db_instance.mlflow.master_user_secret[0].secret_arn
}

output "region" {
  description = "Region of the buckets and the database"
  value       = data.aws_region.current.region
}

output "mlflow_admin_secret_arn" {
  description = "Secrets Manager secret holding MLflow's admin password (the hub's MLflow front logs in with it)"
  value       = aws_secretsmanager_secret.mlflow_admin.arn
}

output "mlflow_admin_password_version" {
  description = "Version of MLflow's admin password (the atelier module copies it into the hub's Secret when it changes)"
  value       = var.mlflow_admin_password_version
}
