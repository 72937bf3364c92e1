# An empty AWS account to a running hub: network, EKS with the pools profiles/ ask
# for, storage, IRSA roles and the Atelier release, wired output to input.

locals {
  repo         = abspath("${path.root}/../../..")
  profiles_dir = "${local.repo}/profiles"
  namespace    = "atelier"
}

provider "aws" {
  region = var.region
  default_tags {
    tags = var.tags
  }
}

# Both act as whoever runs terraform (the cluster's creator is its admin).
provider "kubernetes" {
  host                   = module.cluster.cluster_endpoint
  cluster_ca_certificate = base64decode(module.cluster.cluster_certificate_authority_data)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.cluster.cluster_name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes = {
    host                   = module.cluster.cluster_endpoint
    cluster_ca_certificate = base64decode(module.cluster.cluster_certificate_authority_data)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.cluster.cluster_name, "--region", var.region]
    }
  }
}

# Where the images are pushed before the hub starts (docs/admin-guide.md: the one targeted apply).
resource "aws_ecr_repository" "this" {
  for_each = toset(["atelier-hub", "atelier-mlflow"])

  name = "${var.name}/${each.key}"
  # A tag names one image forever: what Terraform deployed is what runs.
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
  }
}

module "network" {
  source = "../../modules/network"

  name         = var.name
  azs          = [for zone in ["a", "b", "c"] : "${var.region}${zone}"]
  cluster_name = var.name
  tags         = var.tags
}

module "cluster" {
  source = "../../modules/cluster"

  name                         = var.name
  subnet_ids                   = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.admin_cidrs
  profiles_dir                 = local.profiles_dir
  node_groups                  = var.node_groups
  tags                         = var.tags
}

module "storage" {
  source = "../../modules/storage"

  name                       = var.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.cluster.cluster_security_group_id]
  db_deletion_protection     = var.db_deletion_protection
  tags                       = var.tags
}

module "identity" {
  source = "../../modules/identity"

  name                    = var.name
  namespace               = local.namespace
  cluster_name            = module.cluster.cluster_name
  oidc_provider_arn       = module.cluster.oidc_provider_arn
  oidc_provider           = module.cluster.oidc_provider
  shared_bucket_arn       = module.storage.shared_bucket_arn
  shared_kms_key_arn      = module.storage.shared_kms_key_arn
  mlflow_bucket_arn       = module.storage.mlflow_bucket_arn
  mlflow_kms_key_arn      = module.storage.mlflow_kms_key_arn
  db_secret_arn           = module.storage.db_secret_arn
  db_resource_id          = module.storage.db_resource_id
  mlflow_admin_secret_arn = module.storage.mlflow_admin_secret_arn
  db_username             = module.storage.db_username
  tags                    = var.tags
}

module "atelier" {
  source = "../../modules/atelier"

  namespace       = local.namespace
  atelier_command = "${local.repo}/.venv/bin/atelier"
  profiles_dir    = local.profiles_dir
  public_url      = var.public_url
  chart_version   = var.chart_version
  hub_image       = { name = aws_ecr_repository.this["atelier-hub"].repository_url, tag = var.hub_image_tag }
  extra_values    = [for f in var.extra_values_files : file(f)]

  singleuser_image   = var.singleuser_image
  core_node_selector = module.cluster.core_node_selector
  # The first pool whose profiles ask for GPUs (none: no device plugin).
  gpu_node_selector = try([for pool in values(module.cluster.node_pools) : pool.labels if pool.gpu][0], null)
  private_cidrs     = [module.network.vpc_cidr_block]
  region            = var.region

  shared_bucket    = module.storage.shared_bucket
  cluster_name     = module.cluster.cluster_name
  session_role_arn = module.identity.session_role_arn

  mlflow_image           = "${aws_ecr_repository.this["atelier-mlflow"].repository_url}:${var.mlflow_image_tag}"
  mlflow_service_account = module.identity.mlflow_service_account
  mlflow_role_arn        = module.identity.mlflow_role_arn
  mlflow_bucket          = module.storage.mlflow_bucket
  db_address             = module.storage.db_address
  db_port                = module.storage.db_port
  db_name                = module.storage.db_name
  db_secret_arn          = module.storage.db_secret_arn

  mlflow_admin_secret_arn       = module.storage.mlflow_admin_secret_arn
  mlflow_admin_password_version = module.storage.mlflow_admin_password_version

  # The chart's pods land on nodes: wait for the node groups (and the EBS driver).
  depends_on = [module.cluster]
}
