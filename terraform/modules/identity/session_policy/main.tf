# What a session may do in S3: the shared area of the shared bucket (everything but
# `users/`) and its own user's `users/NAME/`, NAME read from the session tag that EKS
# Pod Identity puts on the role session (the ServiceAccount's name, which the hub
# names after the user). The same rules as the embedded store's bucket policies
# (hub/atelier_hub/services/s3_accounts.py). ref: https://docs.aws.amazon.com/eks/latest/userguide/pod-id-abac.html
#
# IAM has no condition on an object's key, so "the bucket but users/" is an Allow by
# NotResource (anything but users/) bounded by a Deny of every object outside the bucket.

locals {
  own_prefix = "${var.users_prefix}$${aws:PrincipalTag/${var.user_tag}}/"
  object_actions = [
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
  ]

  policy = {
    Version = "2012-10-17"
    Statement = [
      {
        # A listing outside users/ (none given: the bucket's top, where users/ shows
        # as one prefix), as the embedded store allows.
        Sid       = "ListSharedArea"
        Effect    = "Allow"
        Action    = ["s3:ListBucket"]
        Resource  = [var.shared_bucket_arn]
        Condition = { StringNotLike = { "s3:prefix" = ["${var.users_prefix}*"] } }
      },
      {
        Sid       = "ListOwnPrefix"
        Effect    = "Allow"
        Action    = ["s3:ListBucket"]
        Resource  = [var.shared_bucket_arn]
        Condition = { StringLike = { "s3:prefix" = ["${local.own_prefix}*"] } }
      },
      {
        Sid      = "BucketLocationAndUploads"
        Effect   = "Allow"
        Action   = ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
        Resource = [var.shared_bucket_arn]
      },
      {
        Sid      = "ReadWriteOwnPrefix"
        Effect   = "Allow"
        Action   = local.object_actions
        Resource = ["${var.shared_bucket_arn}/${local.own_prefix}*"]
      },
      {
        Sid         = "ReadWriteSharedArea"
        Effect      = "Allow"
        Action      = local.object_actions
        NotResource = ["${var.shared_bucket_arn}/${var.users_prefix}*"]
      },
      {
        # Bounds the NotResource above to the shared bucket's objects.
        Sid         = "NoObjectOutsideTheSharedBucket"
        Effect      = "Deny"
        Action      = local.object_actions
        NotResource = ["${var.shared_bucket_arn}/*"]
      },
      {
        Sid      = "UseSharedKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = [var.shared_kms_key_arn]
      },
    ]
  }
}
