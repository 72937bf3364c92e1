################################################################################
# VPC
################################################################################

variable "name" {
  description = "Name of the VPC and prefix of everything in it (tags `Name`)"
  type        = string
  default     = "atelier"
}

variable "cidr" {
  description = "IPv4 CIDR of the VPC; the cluster settings' `private_cidrs` are set to it, so keep it private (RFC 1918)"
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr, 0))
    error_message = "cidr must be an IPv4 CIDR such as 10.0.0.0/16."
  }
}

variable "azs" {
  description = "Availability zones (names, e.g. eu-west-1a) that each get a private and a public subnet; named, so a zone AWS adds later never moves a subnet"
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.azs) >= 2 && length(var.azs) <= 6
    error_message = "azs must name 2 to 6 availability zones (EKS needs subnets in at least two), e.g. [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)"
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "EKS cluster name, tagged on the subnets so the AWS load balancer controller finds them"
  type        = string
  default     = "atelier"
}

################################################################################
# Flow logs
################################################################################

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept in CloudWatch Logs"
  type        = number
  default     = 365
}

variable "flow_log_kms_key_arn" {
  description = "KMS key that encrypts the flow log group; null: CloudWatch Logs' own encryption"
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource"
  type        = map(string)
  default     = {}
}
