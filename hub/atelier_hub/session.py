"""The session contract: (profile, user, services) -> the environment of one session.

Rule this module keeps: every library is configured through its *own* mechanism (its
env vars or config files), so user code stays native: ``boto3.client("s3")`` and
``mlflow.start_run()`` need no argument. This is a pure function; the spawners (local
process or KubeSpawner) only add what they alone know (the API token, GPU ids).
What each service adds is its own settings' to say
(:meth:`atelier_hub.settings.ServiceSettings.session_env`): this module names no service,
it asks each one the deployment names, in the order ``Services`` lists them.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import BaseModel

from .image_paths import HOME
from .profiles import Profile, format_memory
from .settings import GitSettings, SessionContext, service_parts

__all__ = ["session_env", "session_files", "git_config", "THREAD_VARS", "GIT_CONFIG", "GIT_CREDENTIAL_HOSTS"]

#: the session's git settings, under its config folder: git reads them as its system
#: file (GIT_CONFIG_SYSTEM), so the user's own ~/.gitconfig and a repository's config win
GIT_CONFIG = "git/config"
#: beside it, what the credentials service adds: its helper for each git host (included
#: by GIT_CONFIG; absent without that service)
GIT_CREDENTIAL_HOSTS = "git/credential-hosts"

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
    services: BaseModel,
    cpus: int,
    api_token: str | None = None,
    gpu_ids: list[int] | None = None,
    config_dir: str | None = None,
) -> dict[str, str]:
    """Environment variables for one session.

    ``config_dir`` is where the files of :func:`session_files` are written for this
    session; the variables that point libraries at them are set only when it is given.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> from atelier_hub.services import Services
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

    if config_dir:
        env["GIT_CONFIG_SYSTEM"] = f"{config_dir}/{GIT_CONFIG}"
    ctx = SessionContext(profile=profile, username=username, services=services, cpus=cpus,
                         api_token=api_token, config_dir=config_dir)
    for part in service_parts(services):
        env.update(part.session_env(ctx))
    return env


def session_files(profile: Profile, *, username: str, services: BaseModel, cpus: int,
                  git: GitSettings | None = None) -> dict[str, str]:
    """Config files each library reads, by path relative to the session's config folder;
    ``git``: the deployment's git settings (its ``git`` part; default: GitSettings()).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> from atelier_hub.services import Services
    >>> sorted(session_files(p, username="ada", services=Services(), cpus=2))
    ['git/config']
    """
    files: dict[str, str] = {GIT_CONFIG: git_config(username, git or GitSettings())}
    ctx = SessionContext(profile=profile, username=username, services=services, cpus=cpus)
    for part in service_parts(services):
        files.update(part.session_files(ctx))
    return files


def git_config(username: str, git: GitSettings) -> str:
    """The session's git settings: who commits (the hub user) and the home as a safe
    directory (a home first used by another uid is still the user's).

    >>> print(git_config("ada", GitSettings()), end="")
    [user]
        name = ada
        email = ada@users.noreply.atelier
    [safe]
        directory = /home/jovyan
    [include]
        path = credential-hosts
    """
    # git config values: a name with a quote or backslash is escaped, a newline cannot be one.
    name = username.replace("\\", "\\\\").replace('"', '\\"')
    # The credentials service's helper per git host, when the deployment has one
    # (services.credentials): git ignores an include whose file is not there.
    return (f'[user]\n    name = {name}\n    email = {username}@{git.email_domain}\n'
            f'[safe]\n    directory = {HOME}\n'
            f'[include]\n    path = {PurePosixPath(GIT_CREDENTIAL_HOSTS).name}\n')
