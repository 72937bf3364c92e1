# The inputs of `atelier render values`, made from what the other modules output.
#
# Rule this module keeps: the cluster settings and the deployment settings are
# written here from Terraform values only (nothing copied by hand), and rendering
# itself is the atelier CLI's: `query` is exactly what the atelier module hands to
# render_values.py (its `external` data source), so the values Helm gets are the
# CLI's output for these inputs. No provider: tests/terraform applies it here.

locals {
  cluster_settings = merge({
    # No default: `atelier render values` refuses values where users share the hub's origin.
    public_url       = var.public_url
    namespace        = var.namespace
    hub_image        = var.hub_image
    singleuser_image = var.singleuser_image
    storage = {
      capacity      = var.home_capacity
      storage_class = var.storage_class
    }
    culling = {
      enabled = var.enable_culling
    }
    gpu_servers_per_user = var.gpu_servers_per_user
    node_pools = {
      core = var.core_node_selector
    }
    # Each user's pods run as their own ServiceAccount, associated with the session
    # role (EKS Pod Identity): the role's policy grants users/NAME/ to NAME only.
    identity = {
      per_user_role_arn = var.session_role_arn
      eks_cluster_name  = var.cluster_name
    }
    # MLflow behind the hub's login: the MLflow front in the hub pod before MLflow's
    # own server (its auth app), with the admin password from the Secret the hub pod
    # alone mounts. Sessions get the front's URL and their hub token, never the server's.
    mlflow = {
      server_url   = var.mlflow_server_url
      admin_secret = var.mlflow_admin_secret
    }
    private_cidrs = var.private_cidrs
  }, var.extra_cluster_settings)

  deployment = {
    services = merge({
      # No endpoint_url, no keys: AWS's own S3, reached with the session role (Pod Identity).
      s3 = {
        bucket = var.shared_bucket
        region = var.region
      }
      # MLflow is the cluster settings' (above): `atelier render values` adds the front's.
    }, var.extra_services)
  }
}
