variable "profiles_dir" {
  description = "The profiles folder (`profiles/`): every *.yaml or *.yml file in it is one profile"
  type        = string
}

variable "pool_label" {
  description = "The node label a profile's `node_selector` names its pool with"
  type        = string
  default     = "atelier.dev/pool"
}

variable "default_pool" {
  description = "Pool of the profiles with no pool label in their `node_selector`; untainted, and where the chart's own pods run"
  type        = string
  default     = "cpu"
}

variable "exists_taint_value" {
  description = "Value of a taint made from a toleration with `operator: Exists` (which tolerates any value)"
  type        = string
  default     = "present"
}
