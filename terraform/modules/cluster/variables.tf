################################################################################
# Cluster
################################################################################

variable "name" {
  description = "Name of the EKS cluster"
  type        = string
  default     = "atelier"
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the node groups (the chart needs >= 1.32)"
  type        = string
  default     = "1.34"
}

variable "subnet_ids" {
  description = "Private subnets of the control plane's network interfaces and of every node group (network module's `private_subnet_ids`)"
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs private subnets in at least two availability zones (the network module's private_subnet_ids)."
  }
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs that may reach the Kubernetes API from the internet (where `terraform apply` and kubectl run); empty: private endpoint only"
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Days the control plane's logs (API, audit, authenticator) are kept"
  type        = number
  default     = 365
}

################################################################################
# Node groups
################################################################################

variable "profiles_dir" {
  description = "The profiles folder: node groups, their labels and their taints are derived from it (see node_pools/); null: the repository's profiles/"
  type        = string
  default     = null
}

variable "default_pool" {
  description = "The node group of the profiles that name no pool, and of the hub and the proxy"
  type        = string
  default     = "cpu"
}

variable "node_groups" {
  description = "Size of each node pool the profiles use, by pool name: instance types, min, max, desired node count, disk GiB"
  type = map(object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size      = optional(number, 100)
  }))
  default = {
    # Small sessions and the chart's own pods; cpu-large (8 CPUs) fits an m6i.4xlarge.
    cpu = { instance_types = ["m6i.4xlarge"], min_size = 1, max_size = 10, desired_size = 2 }
    # highmem guarantees 48 GB: an r6i.4xlarge has 128 GiB for two such sessions.
    highmem = { instance_types = ["r6i.4xlarge"], min_size = 0, max_size = 5, desired_size = 0 }
    # gpu-4 needs four GPUs, 16 CPUs and 128 GB on one node: g5.12xlarge (4 A10G, 48 vCPU, 192 GiB).
    gpu = { instance_types = ["g5.12xlarge"], min_size = 0, max_size = 4, desired_size = 0, disk_size = 200 }
  }
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
