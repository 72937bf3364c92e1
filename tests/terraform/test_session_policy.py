"""The sessions' S3 policy on AWS (identity module, session_policy/): what docs/security.md
promises, written out literally. Each user's sessions read and write the shared area of
the shared bucket and their own ``users/NAME/``, NAME being the session tag
``kubernetes-service-account`` that EKS Pod Identity sets (the hub names each user's
ServiceAccount after them). The real terraform applies the provider-free module.
"""

from __future__ import annotations

import json

import pytest
from tf_run import TERRAFORM, apply_root, hcl

SESSION_POLICY = TERRAFORM / "modules" / "identity" / "session_policy"
BUCKET = "arn:aws:s3:::atelier-shared-123456789012"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/0b7a6f4e-1111-2222-3333-444455556666"
OBJECT_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                  "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]


@pytest.fixture(scope="module")
def outputs(terraform_bin, tmp_path_factory):
    return apply_root(terraform_bin, tmp_path_factory.mktemp("session-policy"), f"""
module "session_policy" {{
  source             = {hcl(SESSION_POLICY)}
  shared_bucket_arn  = "{BUCKET}"
  shared_kms_key_arn = "{KEY}"
}}

output "json" {{
  value = module.session_policy.json
}}

output "own_prefix" {{
  value = module.session_policy.own_prefix
}}
""")


def test_the_session_policy_is_the_shared_area_and_the_users_own_prefix(outputs):
    assert outputs["own_prefix"] == "users/${aws:PrincipalTag/kubernetes-service-account}/"
    assert json.loads(outputs["json"]) == {"Version": "2012-10-17", "Statement": [
        {"Sid": "ListSharedArea", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [BUCKET],
         "Condition": {"StringNotLike": {"s3:prefix": ["users/*"]}}},
        {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [BUCKET],
         "Condition": {"StringLike": {"s3:prefix": ["users/${aws:PrincipalTag/kubernetes-service-account}/*"]}}},
        {"Sid": "BucketLocationAndUploads", "Effect": "Allow",
         "Action": ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"], "Resource": [BUCKET]},
        {"Sid": "ReadWriteOwnPrefix", "Effect": "Allow", "Action": OBJECT_ACTIONS,
         "Resource": [f"{BUCKET}/users/${{aws:PrincipalTag/kubernetes-service-account}}/*"]},
        {"Sid": "ReadWriteSharedArea", "Effect": "Allow", "Action": OBJECT_ACTIONS,
         "NotResource": [f"{BUCKET}/users/*"]},
        {"Sid": "NoObjectOutsideTheSharedBucket", "Effect": "Deny", "Action": OBJECT_ACTIONS,
         "NotResource": [f"{BUCKET}/*"]},
        {"Sid": "UseSharedKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": [KEY]},
    ]}
