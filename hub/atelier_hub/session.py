"""The session contract: (profile, user, services) -> the environment of one session.

Rule this module keeps: every library is configured through its *own* mechanism (its
env vars or config files), so user code stays native: ``boto3.client("s3")`` and
``mlflow.start_run()`` need no argument. This is a pure function; the spawners (local
process or KubeSpawner) only add what they alone know (the API token, GPU ids).
"""

from __future__ import annotations

from .profiles import Profile
from .settings import Services

__all__ = ["session_env", "THREAD_VARS"]

# Thread pools that size themselves to the machine's cores unless told otherwise;
# torch reads OMP_NUM_THREADS. ref: https://github.com/joblib/threadpoolctl
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)


def session_env(
    profile: Profile,
    *,
    username: str,
    services: Services,
    threads: int,
    api_token: str | None = None,
    gpu_ids: list[int] | None = None,
) -> dict[str, str]:
    """Environment variables for one session.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> env = session_env(p, username="ada", services=Services(), threads=2)
    >>> env["ATELIER_PROFILE"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]
    ('cpu-small', '2', '')
    """
    env: dict[str, str] = {
        "ATELIER_USER": username,
        "ATELIER_PROFILE": profile.name,
        "ATELIER_PROFILE_DISPLAY_NAME": profile.display_name,
        "ATELIER_CPU_LIMIT": f"{profile.cpu.limit:g}",
        "ATELIER_MEM_LIMIT": str(profile.memory.limit),
        "ATELIER_GPU_COUNT": str(profile.gpu_count),
        # jupyter-resource-usage and friends read these two.
        "CPU_LIMIT": f"{profile.cpu.limit:g}",
        "MEM_LIMIT": str(profile.memory.limit),
    }
    if profile.cpu.guarantee is not None:
        env["ATELIER_CPU_GUARANTEE"] = f"{profile.cpu.guarantee:g}"
    if profile.memory.guarantee is not None:
        env["ATELIER_MEM_GUARANTEE"] = str(profile.memory.guarantee)
    if profile.gpu and profile.gpu.type:
        env["ATELIER_GPU_TYPE"] = profile.gpu.type
    for var in THREAD_VARS:
        env[var] = str(threads)
    # An empty CUDA_VISIBLE_DEVICES hides every GPU: a CPU session must not grab one.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids or [])

    if services.s3 is not None:
        s3 = services.s3
        env["ATELIER_SHARED_BUCKET"] = s3.bucket
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = s3.region
        if s3.endpoint_url:
            # boto3 >= 1.28 and the AWS CLI read AWS_ENDPOINT_URL; MLflow's S3 artifact
            # client reads MLFLOW_S3_ENDPOINT_URL.
            env["AWS_ENDPOINT_URL"] = env["MLFLOW_S3_ENDPOINT_URL"] = s3.endpoint_url
        if s3.access_key_id and s3.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = s3.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key

    if services.mlflow is not None:
        env["MLFLOW_TRACKING_URI"] = services.mlflow.tracking_uri
        if services.mlflow.auth == "hub" and api_token:
            # MLflow sends it as "Authorization: Bearer ..."; JupyterHub's service
            # auth accepts bearer tokens. ref: jupyterhub/services/auth.py auth_header_pat
            env["MLFLOW_TRACKING_TOKEN"] = api_token
    return env
