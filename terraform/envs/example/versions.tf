terraform {
  # Ephemeral resources and write-only attributes (MLflow's admin password): 1.11.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0, < 7.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 3.0, < 4.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.36, < 4.0"
    }
  }

  # Keep the state in S3 with locking for a real deployment, e.g.:
  # backend "s3" { bucket = "<state bucket>", key = "atelier/terraform.tfstate", region = "eu-west-1", use_lockfile = true }
}
