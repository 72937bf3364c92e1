variable "atelier_command" {
  description = "How to run the atelier CLI, split like a shell line (e.g. \"../../../.venv/bin/atelier\"); relative paths are relative to where terraform runs"
  type        = string
  default     = "atelier"
}

variable "profiles_dir" {
  description = "The profiles folder the values are rendered from (the cluster's node pools come from the same folder)"
  type        = string
}

variable "values_schema" {
  description = "The chart's values.schema.yaml (values.yaml beside it); when set, rendering fails on values the chart would refuse"
  type        = string
  default     = null
}

variable "public_url" {
  description = "The hub's public URL, scheme and host only (e.g. \"https://atelier.example.org\"): each user's servers answer at NAME.atelier.example.org, an origin of their own, so DNS records for the host and *.host must point at the proxy and a TLS certificate cover both names"
  type        = string
}

variable "namespace" {
  description = "Namespace of the Helm release, the sessions and MLflow"
  type        = string
  default     = "atelier"
}

################################################################################
# Images
################################################################################

variable "hub_image" {
  description = "The hub image carrying atelier-hub (the chart's k8s-hub plus `pip install atelier-hub`)"
  type = object({
    name = string
    tag  = string
  })
}

variable "singleuser_image" {
  description = "The session image of profiles that name none"
  type = object({
    name = string
    tag  = string
  })
}

################################################################################
# What the other modules made
################################################################################

variable "cluster_name" {
  description = "Name of the EKS cluster (cluster module's `cluster_name`): each user's Pod Identity association"
  type        = string
}

variable "session_role_arn" {
  description = "IAM role of every user's ServiceAccount, by EKS Pod Identity (identity module's `session_role_arn`)"
  type        = string
}

variable "shared_bucket" {
  description = "The shared bucket (storage module's `shared_bucket`)"
  type        = string
}

variable "region" {
  description = "AWS region of the shared bucket (storage module's `region`)"
  type        = string
}

variable "mlflow_server_url" {
  description = "MLflow's tracking server (its auth app, static prefix /services/mlflow); only the hub's MLflow front reaches it"
  type        = string
}

variable "mlflow_admin_secret" {
  description = "Kubernetes Secret (key `admin-password`) with MLflow's admin password, mounted in the hub pod only"
  type        = string
  default     = "atelier-mlflow-admin"
}

variable "core_node_selector" {
  description = "Node selector of the pool the hub, the proxy and the user scheduler run on (cluster module's `core_node_selector`)"
  type        = map(string)
}

variable "private_cidrs" {
  description = "CIDRs where service hostnames resolve (network module's `vpc_cidr_block`)"
  type        = list(string)
}

################################################################################
# Sessions
################################################################################

variable "storage_class" {
  description = "StorageClass of the per-user home PVC; null: the cluster's default"
  type        = string
  default     = "gp3"
}

variable "home_capacity" {
  description = "Size of each user's home volume"
  type        = string
  default     = "50Gi"
}

variable "enable_culling" {
  description = "Stop idle servers after each profile's culling timeouts (profiles/; the home stays)"
  type        = bool
  default     = true
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
  description = "More services for the deployment settings (trino, spark, ray), as in deployment.yaml's `services`"
  type        = any
  default     = {}
}
