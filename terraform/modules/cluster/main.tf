# EKS with one managed node group per pool that profiles/ select.
#
# Rule this module keeps: node groups, labels and taints come from the profiles
# (node_pools/), never from a list written here; var.node_groups only sizes them,
# and a pool with no size is an error that names the missing key.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

module "node_pools" {
  source = "./node_pools"

  profiles_dir = coalesce(var.profiles_dir, "${path.module}/../../../profiles")
  default_pool = var.default_pool
}

locals {
  pools          = module.node_pools.pools
  unsized_pools  = setsubtract(keys(local.pools), keys(var.node_groups))
  partition      = data.aws_partition.current.partition
  oidc_issuer    = aws_eks_cluster.this.identity[0].oidc[0].issuer
  iam_policy_arn = "arn:${local.partition}:iam::aws:policy"
}

################################################################################
# Control plane
################################################################################

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name_prefix        = "${var.name}-cluster-"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "${local.iam_policy_arn}/AmazonEKSClusterPolicy"
}

# Kubernetes Secrets (the hub's per-server Secrets hold session tokens) are encrypted
# with a key of this account, not only by EBS.
data "aws_iam_policy_document" "secrets_key" {
  # checkov:skip=CKV_AWS_109: a key policy's Resource "*" is this key alone; this is AWS's default key policy (the account administers the key, IAM policies grant its use)
  # checkov:skip=CKV_AWS_111: as above: Resource "*" in a key policy is the key itself
  # checkov:skip=CKV_AWS_356: as above: Resource "*" in a key policy is the key itself
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "secrets" {
  description         = "${var.name}: envelope encryption of Kubernetes Secrets"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.secrets_key.json

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  # checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest already; the control-plane logs hold no secret values (EKS redacts them)
  # EKS writes here; created first so that retention applies from the first line.
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = var.log_retention_days

  tags = var.tags
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.endpoint_public_access_cidrs) > 0
    public_access_cidrs     = length(var.endpoint_public_access_cidrs) > 0 ? var.endpoint_public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.secrets.arn
    }
  }

  access_config {
    authentication_mode = "API"
    # Whoever runs `terraform apply` administers the cluster (the helm and kubernetes
    # providers of the atelier module act as them).
    bootstrap_cluster_creator_admin_permissions = true
  }

  tags = var.tags

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_cloudwatch_log_group.this,
  ]
}

# IAM roles for service accounts: pods trade their projected token for a role.
resource "aws_iam_openid_connect_provider" "this" {
  url            = local.oidc_issuer
  client_id_list = ["sts.amazonaws.com"]

  tags = var.tags
}

################################################################################
# Node groups, one per pool of profiles/
################################################################################

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${var.name}-node-"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "${local.iam_policy_arn}/${each.value}"
}

resource "aws_eks_node_group" "this" {
  for_each = local.pools

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  version         = var.kubernetes_version

  # The NVIDIA AMI carries the driver and the container toolkit; the device plugin
  # (atelier module) then advertises nvidia.com/gpu.
  ami_type       = each.value.gpu ? "AL2023_x86_64_NVIDIA" : "AL2023_x86_64_STANDARD"
  instance_types = try(var.node_groups[each.key].instance_types, [])
  disk_size      = try(var.node_groups[each.key].disk_size, 100)

  scaling_config {
    min_size     = try(var.node_groups[each.key].min_size, 0)
    max_size     = try(var.node_groups[each.key].max_size, 1)
    desired_size = try(var.node_groups[each.key].desired_size, 0)
  }

  labels = each.value.labels

  dynamic "taint" {
    for_each = each.value.taints
    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.eks_effect
    }
  }

  update_config {
    max_unavailable = 1
  }

  tags = merge(var.tags, { "atelier.dev/pool" = each.key })

  lifecycle {
    # The cluster autoscaler moves desired_size; Terraform keeps min and max.
    ignore_changes = [scaling_config[0].desired_size]

    precondition {
      condition     = length(local.unsized_pools) == 0
      error_message = "profiles/ place sessions on pools with no size in node_groups: ${join(", ", sort(local.unsized_pools))}. Add node_groups[\"<pool>\"] = { instance_types, min_size, max_size, desired_size }."
    }
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

################################################################################
# EBS CSI driver: the homes are gp3 volumes, one PVC per user
################################################################################

data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${trimprefix(local.oidc_issuer, "https://")}:sub"
      values   = ["system:serviceaccount:kube-system:ebs-csi-controller-sa"]
    }
    condition {
      test     = "StringEquals"
      variable = "${trimprefix(local.oidc_issuer, "https://")}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name_prefix        = "${var.name}-ebs-csi-"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "${local.iam_policy_arn}/service-role/AmazonEBSCSIDriverPolicy"
}

# EKS Pod Identity's agent: each user's ServiceAccount gets the session role's
# credentials, tagged with its name (identity module).
resource "aws_eks_addon" "pod_identity_agent" {
  cluster_name = aws_eks_cluster.this.name
  addon_name   = "eks-pod-identity-agent"

  tags = var.tags

  depends_on = [aws_eks_node_group.this]
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name             = aws_eks_cluster.this.name
  addon_name               = "aws-ebs-csi-driver"
  service_account_role_arn = aws_iam_role.ebs_csi.arn

  tags = var.tags

  depends_on = [aws_eks_node_group.this]
}
