# Where the platform keeps data: the shared bucket, MLflow's artifact bucket and
# MLflow's PostgreSQL database.
#
# Rule this module keeps: every store is encrypted with a key of its own (so a role
# granted one key cannot read another store), versioned or backed up, closed to the
# public and reachable over TLS only. The database's password is made and kept by
# RDS in Secrets Manager: it is never in Terraform's state or in a pod spec.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  buckets = {
    shared = coalesce(var.shared_bucket_name, "${var.name}-shared-${local.account_id}")
    mlflow = coalesce(var.mlflow_bucket_name, "${var.name}-mlflow-${local.account_id}")
  }
  # One key per bucket, and MLflow's database shares MLflow's key.
  keys = toset(["shared", "mlflow"])
}

################################################################################
# Keys
################################################################################

data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_109: a key policy's Resource "*" is this key alone; this is AWS's default key policy (the account administers the key, IAM policies grant its use)
  # checkov:skip=CKV_AWS_111: as above: Resource "*" in a key policy is the key itself
  # checkov:skip=CKV_AWS_356: as above: Resource "*" in a key policy is the key itself
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  for_each = local.keys

  description         = "${var.name}: ${each.key} data"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  for_each = local.keys

  name          = "alias/${var.name}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}

################################################################################
# Buckets
################################################################################

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_18: access is audited with CloudTrail data events (the account's trail); server access logs would need a log bucket per bucket
  # checkov:skip=CKV_AWS_144: replication to a second region is a disaster-recovery choice of the platform team; versioning keeps every overwritten object
  # checkov:skip=CKV2_AWS_62: nothing consumes bucket events; sessions and MLflow read and write directly
  for_each = local.buckets

  bucket        = each.value
  force_destroy = var.force_destroy

  tags = merge(var.tags, { "atelier.dev/store" = each.key })
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    # ACLs off: access is decided by IAM and the bucket policy alone.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = aws_s3_bucket.this

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this[each.key].arn
    }
    # One data key per bucket instead of a KMS call per object: fewer requests, same key.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "tls_only" {
  for_each = aws_s3_bucket.this

  statement {
    sid     = "DenyPlainHTTP"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

################################################################################
# MLflow's PostgreSQL
################################################################################

resource "aws_db_subnet_group" "mlflow" {
  name_prefix = "${var.name}-mlflow-"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

resource "aws_security_group" "mlflow_db" {
  name_prefix = "${var.name}-mlflow-db-"
  description = "MLflow's PostgreSQL: PostgreSQL from the cluster's nodes only"
  vpc_id      = var.vpc_id

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_db" {
  for_each = toset(var.allowed_security_group_ids)

  security_group_id            = aws_security_group.mlflow_db.id
  description                  = "PostgreSQL from the cluster (MLflow's tracking server)"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_db_parameter_group" "mlflow" {
  name_prefix = "${var.name}-mlflow-"
  family      = "postgres${var.db_engine_version}"
  description = "MLflow's PostgreSQL: TLS required, slow statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name_prefix        = "${var.name}-rds-monitoring-"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "mlflow" {
  identifier_prefix = "${var.name}-mlflow-"
  engine            = "postgres"
  engine_version    = var.db_engine_version
  instance_class    = var.db_instance_class
  db_name           = "mlflow"
  username          = "mlflow"
  # RDS makes the password, rotates it and keeps it in Secrets Manager, encrypted
  # with MLflow's key; MLflow's role may read that one secret.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this["mlflow"].arn

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this["mlflow"].arn

  db_subnet_group_name   = aws_db_subnet_group.mlflow.name
  vpc_security_group_ids = [aws_security_group.mlflow_db.id]
  parameter_group_name   = aws_db_parameter_group.mlflow.name
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  iam_database_authentication_enabled = true
  backup_retention_period             = var.db_backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.db_deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-mlflow-final"
  auto_minor_version_upgrade          = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this["mlflow"].arn
  performance_insights_retention_period = 7

  tags = var.tags

  depends_on = [aws_iam_role_policy_attachment.monitoring]
}

################################################################################
# MLflow's admin password (MLflow's auth app): the hub's MLflow front logs in with it
# and makes each user's account. Generated at apply and written to Secrets Manager
# only (an ephemeral value into a write-only attribute): never in Terraform's state
# or plan. MLflow's role reads it when the server starts; the atelier module copies it
# into the Secret the hub pod mounts, write-only as well.
################################################################################

ephemeral "random_password" "mlflow_admin" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "mlflow_admin" {
  # checkov:skip=CKV2_AWS_57: no rotation Lambda: rotate by raising mlflow_admin_password_version (a new password at the next apply); the hub's front sets every account's derived password again on its next request
  name_prefix             = "${var.name}-mlflow-admin-"
  description             = "${var.name}: MLflow's admin password (the hub's MLflow front)"
  kms_key_id              = aws_kms_key.this["mlflow"].arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "mlflow_admin" {
  secret_id                = aws_secretsmanager_secret.mlflow_admin.id
  secret_string_wo         = ephemeral.random_password.mlflow_admin.result
  secret_string_wo_version = var.mlflow_admin_password_version
}
