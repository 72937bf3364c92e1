################################################################################
# Buckets
################################################################################

variable "name" {
  description = "Prefix of the bucket names, the database identifier and the keys' aliases"
  type        = string
  default     = "atelier"
}

variable "shared_bucket_name" {
  description = "Name of the shared bucket every session reads and writes (globally unique); null: <name>-shared-<account id>"
  type        = string
  default     = null
}

variable "mlflow_bucket_name" {
  description = "Name of MLflow's artifact bucket (globally unique); null: <name>-mlflow-<account id>"
  type        = string
  default     = null
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept before it expires"
  type        = number
  default     = 90
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete buckets that still hold objects (for throwaway environments only)"
  type        = bool
  default     = false
}

################################################################################
# MLflow's database
################################################################################

variable "vpc_id" {
  description = "VPC of the database (network module's `vpc_id`)"
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Private subnets of the database, in at least two zones (network module's `private_subnet_ids`)"
  type        = list(string)
  default     = []
}

variable "allowed_security_group_ids" {
  description = "Security groups admitted to PostgreSQL's port (cluster module's `cluster_security_group_id`: the nodes)"
  type        = list(string)
  default     = []
}

variable "db_instance_class" {
  description = "RDS instance class of MLflow's PostgreSQL"
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL major version"
  type        = string
  default     = "17"
}

variable "db_allocated_storage" {
  description = "GiB of gp3 storage for the database (it grows to db_max_allocated_storage)"
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Upper bound in GiB of storage autoscaling"
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "A standby in a second zone (survives a zone outage; doubles the cost)"
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)"
  type        = number
  default     = 14
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (turn off before a deliberate `terraform destroy`)"
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}

variable "mlflow_admin_password_version" {
  description = "Raise it to give MLflow's admin password a new random value at the next apply (restart MLflow and the hub after)"
  type        = number
  default     = 1
}
