variable "region" {
  description = "AWS region of everything"
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the deployment: prefix of the VPC, the cluster, the buckets, the roles"
  type        = string
  default     = "atelier"
}

variable "admin_cidrs" {
  description = "CIDRs (where you run terraform and kubectl) that may reach the Kubernetes API"
  type        = list(string)
  default     = []
}

variable "public_url" {
  description = "The hub's public URL, scheme and host only (e.g. \"https://atelier.example.org\"); users' servers answer at NAME.atelier.example.org: DNS records for the host and *.host point at the proxy, and one TLS certificate covers both names (see docs/admin-guide.md)"
  type        = string
}

variable "hub_image_tag" {
  description = "Tag of the hub image you pushed to the atelier-hub repository (the chart's k8s-hub plus atelier-hub, see docs/admin-guide.md)"
  type        = string
}

variable "singleuser_image" {
  description = "The session image of profiles that name none"
  type = object({
    name = string
    tag  = string
  })
  default = {
    name = "quay.io/jupyter/scipy-notebook"
    tag  = "2026-11-30"
  }
}

variable "mlflow_image_tag" {
  description = "Tag of the MLflow image you pushed to the atelier-mlflow repository (mlflow, psycopg2, boto3)"
  type        = string
}

variable "chart_version" {
  description = "Version of the jupyterhub Helm chart"
  type        = string
}

variable "extra_values_files" {
  description = "Your own chart values files, applied after the rendered ones: authentication, ingress and TLS (for public_url's host and its wildcard)"
  type        = list(string)
  default     = []
}

variable "node_groups" {
  description = "Size of each node pool (see modules/cluster); the pools themselves come from profiles/"
  type = map(object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size      = optional(number, 100)
  }))
  default = {
    cpu     = { instance_types = ["m6i.4xlarge"], min_size = 1, max_size = 10, desired_size = 2 }
    highmem = { instance_types = ["r6i.4xlarge"], min_size = 0, max_size = 5, desired_size = 0 }
    gpu     = { instance_types = ["g5.12xlarge"], min_size = 0, max_size = 4, desired_size = 0, disk_size = 200 }
  }
}

variable "db_deletion_protection" {
  description = "Refuse to delete MLflow's database (set false before a deliberate destroy)"
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = { "atelier.dev/deployment" = "example" }
}
