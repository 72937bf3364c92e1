"""Start MLflow's tracking server on RDS PostgreSQL and S3 (mounted from a ConfigMap).

Rule this script keeps: no password appears in the pod spec, in Terraform's state or
on a command line. The pod's IRSA role reads the secrets Secrets Manager keeps them
in (the database's, which RDS manages, and MLflow's admin password), and they reach
``mlflow server`` through its environment only.

The server runs MLflow's auth app (``--app-name basic-auth``) under the hub front's
prefix (``--static-prefix /services/mlflow``): the hub's MLflow front logs in as its
admin, ``service/mlflow``, and makes one account per hub user; a request without an
account's password gets 401. Its accounts and permissions live in the same
PostgreSQL database (MLflow's auth tables, with their own migration table).
"""

import json
import os
import secrets
from urllib.parse import quote

import boto3

client = boto3.client("secretsmanager")
secret = json.loads(client.get_secret_value(SecretId=os.environ["ATELIER_DB_SECRET_ARN"])["SecretString"])
database = (
    f"postgresql+psycopg2://{quote(secret['username'], safe='')}:{quote(secret['password'], safe='')}"
    f"@{os.environ['ATELIER_DB_HOST']}:{os.environ['ATELIER_DB_PORT']}/{os.environ['ATELIER_DB_NAME']}"
    "?sslmode=require"  # the parameter group sets rds.force_ssl
)
os.environ["MLFLOW_BACKEND_STORE_URI"] = database
# MLflow's auth app: its configuration on the pod's temporary volume (0600; it names
# the database, whose URI holds its password), the admin password in the environment.
config = "/tmp/basic_auth.ini"
fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(
        "[mlflow]\n"
        "default_permission = READ\n"
        # configparser interpolates '%': the URI's escapes are doubled.
        f"database_uri = {database.replace('%', '%%')}\n"
        "admin_username = service/mlflow\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )
os.environ["MLFLOW_AUTH_CONFIG_PATH"] = config
os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = client.get_secret_value(
    SecretId=os.environ["ATELIER_ADMIN_SECRET_ARN"])["SecretString"]
# Signs the auth app's own sign-up form, which the front never lets anyone reach.
os.environ.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
# In the pod's own network namespace: the Service in front of it is the way in, and
# the network policy admits the hub pod only.
os.execvp("mlflow", ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--serve-artifacts",
                     "--app-name", "basic-auth", "--static-prefix", "/services/mlflow"])
