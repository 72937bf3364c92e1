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

variable "device_plugin_config_label" {
  description = "The node label that picks the NVIDIA device plugin's configuration for a node (its config map's key)"
  type        = string
  default     = "nvidia.com/device-plugin.config"
}

variable "device_plugin_configs" {
  description = "The device plugin configurations a pool of GPU slice profiles gets: `mig` (a MIG strategy of mixed) for `gpu.resource: nvidia.com/mig-...`, `shared` (time-slicing with renameByDefault) for `gpu.shared: true`"
  type        = object({ mig = string, shared = string })
  default     = { mig = "mig-mixed", shared = "time-sliced" }
}
