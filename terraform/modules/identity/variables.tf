variable "name" {
  description = "Prefix of the role names"
  type        = string
  default     = "atelier"
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (cluster module's `oidc_provider_arn`)"
  type        = string
  default     = null
}

variable "oidc_provider" {
  description = "The OIDC issuer without https:// (cluster module's `oidc_provider`)"
  type        = string
  default     = null
}

variable "namespace" {
  description = "Kubernetes namespace of the hub, the sessions and MLflow"
  type        = string
  default     = "atelier"
}

################################################################################
# Sessions
################################################################################

variable "cluster_name" {
  description = "Name of the EKS cluster (cluster module's `cluster_name`): the Pod Identity associations' cluster"
  type        = string
  default     = null
}

variable "hub_service_account" {
  description = "ServiceAccount of the hub (the chart's `hub`), which associates each user's ServiceAccount with the session role"
  type        = string
  default     = "hub"
}

variable "shared_bucket_arn" {
  description = "ARN of the shared bucket, the only bucket sessions may use (storage module's `shared_bucket_arn`)"
  type        = string
  default     = null
}

variable "shared_kms_key_arn" {
  description = "ARN of the shared bucket's key (storage module's `shared_kms_key_arn`)"
  type        = string
  default     = null
}

################################################################################
# MLflow
################################################################################

variable "mlflow_service_account" {
  description = "ServiceAccount of MLflow's tracking server"
  type        = string
  default     = "mlflow"
}

variable "mlflow_bucket_arn" {
  description = "ARN of MLflow's artifact bucket (storage module's `mlflow_bucket_arn`)"
  type        = string
  default     = null
}

variable "mlflow_kms_key_arn" {
  description = "ARN of the key of MLflow's bucket and database secret (storage module's `mlflow_kms_key_arn`)"
  type        = string
  default     = null
}

variable "db_secret_arn" {
  description = "Secret holding the database password (storage module's `db_secret_arn`)"
  type        = string
  default     = null
}

variable "mlflow_admin_secret_arn" {
  description = "Secret holding MLflow's admin password (storage module's `mlflow_admin_secret_arn`)"
  type        = string
  default     = null
}

variable "db_resource_id" {
  description = "RDS resource ID of MLflow's database, for IAM authentication (storage module's `db_resource_id`)"
  type        = string
  default     = null
}

variable "db_username" {
  description = "Database user MLflow logs in as (storage module's `db_username`)"
  type        = string
  default     = "mlflow"
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
