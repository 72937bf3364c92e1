"""The session contract: (profile, user, services) -> the environment of one session.

Rule this module keeps: every library is configured through its *own* mechanism (its
env vars or config files), so user code stays native: ``boto3.client("s3")`` and
``mlflow.start_run()`` need no argument. This is a pure function; the spawners (local
process or KubeSpawner) only add what they alone know (the API token, GPU ids).
"""

from __future__ import annotations

import json

from .profiles import Profile, format_memory
from .services.mlflow import personal_experiment
from .settings import Services

__all__ = ["session_env", "session_files", "spark_defaults", "THREAD_VARS"]

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


def activity_interval(profile: Profile) -> int:
    """Seconds between a session's activity reports: six per idle timeout, 5 to 60.

    >>> from atelier_hub.profiles import Profile
    >>> activity_interval(Profile(name="s", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"}))
    60
    """
    return max(5, min(60, profile.idle_timeout // 6))


def session_env(
    profile: Profile,
    *,
    username: str,
    services: Services,
    cpus: int,
    api_token: str | None = None,
    gpu_ids: list[int] | None = None,
    config_dir: str | None = None,
) -> dict[str, str]:
    """Environment variables for one session.

    ``cpus`` is the session's CPU count (:func:`atelier_hub.profiles.session_cpus`): its
    thread pools and Ray's CPUs. ``config_dir`` is where the files of
    :func:`session_files` are written for this session; the variables that point
    libraries at them are set only when it is given.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> env = session_env(p, username="ada", services=Services(), cpus=2)
    >>> env["ATELIER_PROFILE"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]
    ('cpu-small', '2', '')
    """
    env: dict[str, str] = {
        "ATELIER_USER": username,
        "ATELIER_PROFILE": profile.name,
        "ATELIER_PROFILE_DISPLAY_NAME": profile.display_name,
        "ATELIER_CPU_LIMIT": f"{profile.cpu.limit:g}",
        "ATELIER_MEM_LIMIT": str(profile.memory.limit),
        # The same size as the profile writes it (4G, 16Gi), for people: the Connect panel.
        "ATELIER_MEM_LIMIT_DISPLAY": format_memory(profile.memory.limit),
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
        env[var] = str(cpus)
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
        # A store that is down fails in seconds, naming its endpoint, instead of retrying
        # for minutes (botocore's own retry settings).
        env["AWS_RETRY_MODE"] = "standard"
        env["AWS_MAX_ATTEMPTS"] = "3"
        if s3.access_key_id and s3.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = s3.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key

    if services.culler is not None:
        # Read by atelier_lab's server extension: it reports busy kernels, terminals, SSH
        # and GPU use several times per timeout, so the culler sees a job before it idles.
        env["ATELIER_CULLER_URL"] = services.culler.url
        env["ATELIER_ACTIVITY_INTERVAL"] = str(activity_interval(profile))
        env["ATELIER_GPU_BUSY_PERCENT"] = str(services.culler.gpu_busy_percent)

    if services.mlflow is not None:
        env["MLFLOW_TRACKING_URI"] = services.mlflow.tracking_uri
        # MLflow retries 7 times with doubling back-off by default (minutes); 3 is ~15 s.
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "3"
        env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
        if services.mlflow.auth == "hub" and api_token:
            # MLflow sends it as "Authorization: Bearer ..."; JupyterHub's service
            # auth accepts bearer tokens. ref: jupyterhub/services/auth.py auth_header_pat
            env["MLFLOW_TRACKING_TOKEN"] = api_token
        if services.mlflow.auth == "hub":
            # The user's own experiment (the front makes it theirs): in MLflow's
            # "Default" everyone may only read, and a run there would be anyone's to edit.
            env["MLFLOW_EXPERIMENT_NAME"] = personal_experiment(username)

    if services.trino is not None:
        t = services.trino
        env["ATELIER_TRINO_URL"] = t.url
        # jupysql's %sql connects to DATABASE_URL when no connection is named. The hub
        # token is the password (Trino's front checks it; jupysql masks passwords when it
        # shows the URL); plain HTTP on loopback needs the client's allow_insecure_auth.
        host = t.url.split("://", 1)[-1].rstrip("/")
        login = f"{username}:{api_token}" if api_token else username
        env["DATABASE_URL"] = f"trino://{login}@{host}/{t.catalog}" + (
            f"/{t.default_schema}" if t.default_schema else "") + ("?allow_insecure_auth=true" if api_token else "")
        if config_dir:
            env["TRINO_CONFIG"] = f"{config_dir}/trino/config"

    if services.spark is not None:
        sp = services.spark
        if config_dir:
            env["SPARK_CONF_DIR"] = f"{config_dir}/spark"
        if sp.local_ip:
            env["SPARK_LOCAL_IP"] = sp.local_ip
        if sp.java_home:
            env["JAVA_HOME"] = sp.java_home

    if services.ray is not None:
        # Ray's own switches: no usage reporting to the outside; join a cluster when
        # one is configured, else a local ray.init() gets the profile's size (the
        # variable Ray's autoscaler uses to size a node).
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if services.ray.address:
            env["RAY_ADDRESS"] = services.ray.address
        else:
            env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"CPU": cpus, "GPU": profile.gpu_count})
            # Ray's single-machine mode: every Ray process binds 127.0.0.1 instead of the
            # machine's network address. ref: ray/_private/services.py get_node_ip_address
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            # The raylet waits 30 s for its agents to start, then aborts; a busy laptop
            # needs longer. (Ray reads its settings as RAY_<name> variables.)
            env["RAY_agent_register_timeout_ms"] = "120000"

    if services.s3 is not None and config_dir:
        env["FSSPEC_CONFIG_DIR"] = f"{config_dir}/fsspec"
    return env


def spark_defaults(profile: Profile, *, services: Services, cpus: int) -> dict[str, str]:
    """``spark-defaults.conf`` entries for a session: ``cpus`` cores (the session's CPU
    count, as its thread pools) and the profile's memory, s3a on the deployment's store.
    Credentials are not written: s3a's default provider chain reads the session's AWS_*
    variables (or IRSA on a cluster).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-large", display_name="L", cpu={"limit": 8}, memory={"limit": "16G"})
    >>> from atelier_hub.settings import SparkService
    >>> spark_defaults(p, services=Services(spark=SparkService()), cpus=8)["spark.master"]
    'local[8]'
    """
    sp = services.spark
    if sp is None:
        return {}
    mib = profile.memory.limit // 2**20
    conf: dict[str, str] = {}
    if sp.master is None:
        # Local mode: the whole job runs in the driver JVM, which gets half the session's
        # memory (the Python kernel and the OS keep the rest).
        conf["spark.master"] = f"local[{cpus}]"
        conf["spark.driver.memory"] = f"{max(512, mib // 2)}m"
    else:
        conf["spark.master"] = sp.master
        conf["spark.executor.cores"] = str(cpus)
        conf["spark.executor.memory"] = f"{max(512, mib * 3 // 4)}m"
    if sp.local_ip:
        conf["spark.driver.bindAddress"] = conf["spark.driver.host"] = sp.local_ip
    if sp.jars:
        conf["spark.jars"] = ",".join(sp.jars)
    if services.s3 is not None:
        s3 = services.s3
        conf["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
        if s3.endpoint_url:
            conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint_url
            conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint_url.startswith("https")).lower()
        # Bounded retries: a store that is down fails the job in seconds, not minutes.
        conf["spark.hadoop.fs.s3a.attempts.maximum"] = "3"
        conf["spark.hadoop.fs.s3a.retry.limit"] = "3"
        conf["spark.hadoop.fs.s3a.connection.establish.timeout"] = "5s"
    conf.update(sp.conf)
    return conf


def session_files(profile: Profile, *, username: str, services: Services, cpus: int) -> dict[str, str]:
    """Config files each library reads, by path relative to the session's config folder.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> sorted(session_files(p, username="ada", services=Services(), cpus=2))
    []
    """
    files: dict[str, str] = {}
    if services.spark is not None:
        conf = spark_defaults(profile, services=services, cpus=cpus)
        files["spark/spark-defaults.conf"] = "".join(f"{k} {v}\n" for k, v in conf.items())
    if services.s3 is not None and services.s3.endpoint_url:
        # fsspec/s3fs (pandas, pyarrow datasets with s3:// paths) take their defaults from here.
        s3 = {"client_kwargs": {"endpoint_url": services.s3.endpoint_url, "region_name": services.s3.region}}
        files["fsspec/conf.json"] = json.dumps({"s3": s3}, indent=2)
    if services.trino is not None:
        t = services.trino
        lines = [f"server={t.url}", f"user={username}", f"catalog={t.catalog}"]
        if t.default_schema:
            lines.append(f"schema={t.default_schema}")
        files["trino/config"] = "\n".join(lines) + "\n"
    return files
