output "cluster_settings" {
  description = "The cluster settings (cluster.yaml) as an object"
  value       = local.cluster_settings
}

output "deployment" {
  description = "The deployment settings (deployment.yaml) as an object"
  value       = local.deployment
}

output "query" {
  description = "The query of render_values.py (the atelier module's external data source): strings only, as that protocol requires"
  value = {
    atelier         = var.atelier_command
    profiles        = abspath(var.profiles_dir)
    schema          = var.values_schema == null ? "" : abspath(var.values_schema)
    cluster_yaml    = yamlencode(local.cluster_settings)
    deployment_json = jsonencode(local.deployment)
  }
}

output "program" {
  description = "The program of the external data source that renders the values"
  value       = ["python3", "${path.module}/render_values.py"]
}
