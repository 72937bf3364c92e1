variable "namespace" {
  description = "Namespace of the hub, the sessions and MLflow (created here)"
  type        = string
  default     = "atelier"
}

variable "atelier_command" {
  description = "How to run the atelier CLI where terraform runs (e.g. \"../../../.venv/bin/atelier\" from envs/example)"
  type        = string
  default     = "atelier"
}

variable "profiles_dir" {
  description = "The profiles folder: the same one the cluster module derives its node groups from"
  type        = string
}

variable "values_schema" {
  description = "The chart's values.schema.yaml for the chosen chart_version; when set, rendering fails on values the chart would refuse"
  type        = string
  default     = null
}

################################################################################
# The hub (Zero to JupyterHub)
################################################################################

variable "public_url" {
  description = "The hub's public URL, scheme and host only (e.g. \"https://atelier.example.org\"); users' servers answer at NAME.atelier.example.org: point DNS records for the host and *.host at the proxy and cover both names with the TLS certificate (extra_values: ingress hosts/tls, or the load balancer)"
  type        = string
}

variable "chart_version" {
  description = "Version of the jupyterhub chart (https://hub.jupyter.org/helm-chart/); validate with that release's values.schema.yaml (values_schema)"
  type        = string
}

variable "hub_image" {
  description = "The hub image: the chart's k8s-hub plus atelier-hub, pushed to your registry"
  type = object({
    name = string
    tag  = string
  })
}

variable "singleuser_image" {
  description = "The session image of profiles that name none; pin a dated tag"
  type = object({
    name = string
    tag  = string
  })
  default = {
    name = "quay.io/jupyter/scipy-notebook"
    tag  = "2026-11-30"
  }
}

variable "extra_values" {
  description = "More chart values files (YAML text) applied after the rendered ones: authentication, ingress and TLS (for public_url's host and its wildcard)"
  type        = list(string)
  default     = []
}

variable "storage_class" {
  description = "StorageClass of the homes; \"gp3\" is created here on the EBS CSI driver"
  type        = string
  default     = "gp3"
}

variable "home_capacity" {
  description = "Size of each user's home volume"
  type        = string
  default     = "50Gi"
}

variable "gpu_servers_per_user" {
  description = "Concurrent GPU servers per user; 0: none"
  type        = number
  default     = 1
}

variable "extra_cluster_settings" {
  description = "More cluster settings (`atelier render values --cluster`), merged over the ones this module writes: e.g. `queue` (Kueue's GPU queue), `gpus_per_user`, `ray_clusters` (KubeRay); `atelier render values` checks them and names a wrong field"
  type        = any
  default     = {}
}

variable "extra_services" {
  description = "More services for the sessions (trino, spark, ray), as in deployment.yaml's `services`"
  type        = any
  default     = {}
}

################################################################################
# What the other modules made
################################################################################

variable "core_node_selector" {
  description = "Node selector of the untainted pool (cluster module's `core_node_selector`): hub, proxy, MLflow"
  type        = map(string)
}

variable "gpu_node_selector" {
  description = "Node selector of the GPU pool, where the NVIDIA device plugin runs; null: no GPU pool"
  type        = map(string)
  default     = null
}

variable "nvidia_device_plugin_version" {
  description = "Version of NVIDIA's device plugin chart (https://nvidia.github.io/k8s-device-plugin) run on the GPU pool"
  type        = string
  default     = "0.17.1"
}

variable "private_cidrs" {
  description = "The VPC's CIDRs (network module's `vpc_cidr_block`): service hostnames resolve there"
  type        = list(string)
}

variable "region" {
  description = "AWS region of the buckets and the database"
  type        = string
}

variable "shared_bucket" {
  description = "The shared bucket (storage module's `shared_bucket`)"
  type        = string
}

variable "cluster_name" {
  description = "Name of the EKS cluster (cluster module's `cluster_name`): each user's Pod Identity association"
  type        = string
}

variable "session_role_arn" {
  description = "IAM role of every user's ServiceAccount, by EKS Pod Identity (identity module's `session_role_arn`)"
  type        = string
}

################################################################################
# MLflow's tracking server
################################################################################

variable "mlflow_image" {
  description = "Image with mlflow, psycopg2 and boto3 (e.g. ghcr.io/mlflow/mlflow plus `pip install psycopg2-binary boto3`)"
  type        = string
}

variable "mlflow_service_account" {
  description = "ServiceAccount of MLflow (identity module's `mlflow_service_account`)"
  type        = string
  default     = "mlflow"
}

variable "mlflow_role_arn" {
  description = "IAM role of MLflow (identity module's `mlflow_role_arn`)"
  type        = string
}

variable "mlflow_bucket" {
  description = "MLflow's artifact bucket (storage module's `mlflow_bucket`)"
  type        = string
}

variable "db_address" {
  description = "Host name of MLflow's PostgreSQL (storage module's `db_address`)"
  type        = string
}

variable "db_port" {
  description = "Port of MLflow's PostgreSQL"
  type        = number
  default     = 5432
}

variable "db_name" {
  description = "Database of MLflow"
  type        = string
  default     = "mlflow"
}

variable "db_secret_arn" {
  description = "Secret RDS keeps the database user and password in (storage module's `db_secret_arn`)"
  type        = string
}

variable "mlflow_admin_secret_arn" {
  description = "Secret holding MLflow's admin password (storage module's `mlflow_admin_secret_arn`)"
  type        = string
}

variable "mlflow_admin_password_version" {
  description = "Version of that password (storage module's `mlflow_admin_password_version`): a new one is copied into the hub's Secret"
  type        = number
  default     = 1
}

variable "mlflow_replicas" {
  description = "Replicas of the tracking server (stateless: runs live in PostgreSQL, artifacts in S3)"
  type        = number
  default     = 2
}
