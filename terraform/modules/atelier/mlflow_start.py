"""Start MLflow's tracking server on RDS PostgreSQL and S3 (mounted from a ConfigMap).

Rule this script keeps: the database password never appears in the pod spec, in
Terraform's state or on a command line. The pod's IRSA role reads the secret RDS
keeps it in (Secrets Manager), and the backend URI reaches ``mlflow server`` through
its environment only.
"""

import json
import os
from urllib.parse import quote

import boto3

secret = json.loads(
    boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["ATELIER_DB_SECRET_ARN"])["SecretString"]
)
os.environ["MLFLOW_BACKEND_STORE_URI"] = (
    f"postgresql+psycopg2://{quote(secret['username'], safe='')}:{quote(secret['password'], safe='')}"
    f"@{os.environ['ATELIER_DB_HOST']}:{os.environ['ATELIER_DB_PORT']}/{os.environ['ATELIER_DB_NAME']}"
    "?sslmode=require"  # the parameter group sets rds.force_ssl
)
# In the pod's own network namespace: the Service in front of it is the way in.
os.execvp("mlflow", ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--serve-artifacts"])
