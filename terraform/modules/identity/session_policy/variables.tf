variable "shared_bucket_arn" {
  description = "ARN of the shared bucket"
  type        = string
}

variable "shared_kms_key_arn" {
  description = "ARN of the shared bucket's key"
  type        = string
}

variable "users_prefix" {
  description = "Prefix under which each user's private prefix lies (`users/` gives `users/NAME/`)"
  type        = string
  default     = "users/"
}

variable "user_tag" {
  description = "Session tag holding the user's name: EKS Pod Identity's ServiceAccount name, which the hub names after the user"
  type        = string
  default     = "kubernetes-service-account"
}
