# IAM roles for service accounts (IRSA): what the sessions and MLflow may do in AWS.
#
# Rule this module keeps: each role is assumable only by one ServiceAccount of one
# namespace of this cluster, and grants one store: sessions the shared bucket (and
# its key), MLflow its artifact bucket, its database and the secret holding the
# database's password. Nothing else: no s3:ListAllMyBuckets, no wildcard resources.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  service_accounts = {
    session = var.session_service_account
    mlflow  = var.mlflow_service_account
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
# Sessions: the shared bucket only
################################################################################

data "aws_iam_policy_document" "session" {
  statement {
    sid       = "ListSharedBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [var.shared_bucket_arn]
  }
  statement {
    sid = "ReadWriteSharedObjects"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.shared_bucket_arn}/*"]
  }
  statement {
    sid       = "UseSharedKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.shared_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "session" {
  name   = "shared-bucket"
  role   = aws_iam_role.this["session"].id
  policy = data.aws_iam_policy_document.session.json
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
