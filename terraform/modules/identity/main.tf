# What the sessions, the hub and MLflow may do in AWS.
#
# Rule this module keeps: each role is assumable only from one namespace of this
# cluster, and grants one store: each user's sessions the shared area of the shared
# bucket and their own users/NAME/ (EKS Pod Identity, one ServiceAccount per user,
# session_policy/), the hub the Pod Identity associations of those ServiceAccounts,
# MLflow (IRSA) its artifact bucket, its database and the secret holding the
# database's password. Nothing else: no s3:ListAllMyBuckets.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  # IRSA: MLflow's one ServiceAccount.
  service_accounts = {
    mlflow = var.mlflow_service_account
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.service_accounts

  name               = "${var.name}-${each.key}"
  description        = "IRSA: ServiceAccount ${var.namespace}/${each.value}"
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json

  tags = var.tags
}

################################################################################
# Sessions: one role, one ServiceAccount per user (EKS Pod Identity); the shared
# area and the user's own users/NAME/, NAME from the session tag
# kubernetes-service-account (docs/security.md: why Pod Identity).
################################################################################

data "aws_iam_policy_document" "session_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/eks-cluster-name"
      values   = [var.cluster_name]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = [var.namespace]
    }
    # Never the chart's or MLflow's own ServiceAccounts (the hub refuses users so named).
    condition {
      test     = "StringNotEquals"
      variable = "aws:RequestTag/kubernetes-service-account"
      values   = [var.hub_service_account, "default", var.mlflow_service_account]
    }
  }
}

resource "aws_iam_role" "session" {
  name               = "${var.name}-session"
  description        = "EKS Pod Identity: each user's ServiceAccount in ${var.namespace}"
  assume_role_policy = data.aws_iam_policy_document.session_assume.json

  tags = var.tags
}

module "session_policy" {
  source = "./session_policy"

  shared_bucket_arn  = var.shared_bucket_arn
  shared_kms_key_arn = var.shared_kms_key_arn
}

resource "aws_iam_role_policy" "session" {
  name   = "shared-area-and-own-prefix"
  role   = aws_iam_role.session.id
  policy = module.session_policy.json
}

################################################################################
# The hub: the associations of users' ServiceAccounts with the session role
################################################################################

data "aws_iam_policy_document" "hub_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = [var.namespace]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-service-account"
      values   = [var.hub_service_account]
    }
  }
}

resource "aws_iam_role" "hub" {
  name               = "${var.name}-hub"
  description        = "EKS Pod Identity: the hub's ServiceAccount ${var.namespace}/${var.hub_service_account}"
  assume_role_policy = data.aws_iam_policy_document.hub_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "hub" {
  statement {
    sid     = "UsersPodIdentityAssociations"
    actions = ["eks:CreatePodIdentityAssociation", "eks:ListPodIdentityAssociations"]
    resources = [
      "arn:${data.aws_partition.current.partition}:eks:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:cluster/${var.cluster_name}",
    ]
  }
  statement {
    sid     = "ReadAndDeleteThem"
    actions = ["eks:DescribePodIdentityAssociation", "eks:DeletePodIdentityAssociation"]
    resources = [
      "arn:${data.aws_partition.current.partition}:eks:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:podidentityassociation/${var.cluster_name}/*",
    ]
  }
  statement {
    # Only the session role, only to Pod Identity.
    sid       = "PassTheSessionRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.session.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "hub" {
  name   = "users-pod-identity"
  role   = aws_iam_role.hub.id
  policy = data.aws_iam_policy_document.hub.json
}

resource "aws_eks_pod_identity_association" "hub" {
  cluster_name    = var.cluster_name
  namespace       = var.namespace
  service_account = var.hub_service_account
  role_arn        = aws_iam_role.hub.arn

  tags = var.tags
}

################################################################################
# MLflow: its artifact bucket and its database
################################################################################

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListArtifactBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.mlflow_bucket_arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.mlflow_bucket_arn}/*"]
  }
  statement {
    sid       = "UseMlflowKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.mlflow_kms_key_arn]
  }
  statement {
    sid       = "ReadDatabasePassword"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [var.db_secret_arn]
  }
  statement {
    # MLflow's auth app reads its admin password at start (the hub's front logs in with it).
    sid       = "ReadAdminPassword"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [var.mlflow_admin_secret_arn]
  }
  statement {
    # IAM database authentication, for tools that log in with a token instead.
    sid       = "ConnectToDatabase"
    actions   = ["rds-db:connect"]
    resources = ["arn:${data.aws_partition.current.partition}:rds-db:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:dbuser:${var.db_resource_id}/${var.db_username}"]
  }
}

resource "aws_iam_role_policy" "mlflow" {
  name   = "artifacts-and-database"
  role   = aws_iam_role.this["mlflow"].id
  policy = data.aws_iam_policy_document.mlflow.json
}
