"""Which process of a distributed job this is, and what rank 0 records about the job.

The rule this module keeps: only rank 0 of one job records a run, and a process that is
not part of one job (each task of a plain ``srun -n 4``) records its own. The rank comes
from the launchers' variables, and from ``torch.distributed``, ``mpi4py`` or Ray Train
only when the program already imported them: nothing here imports a framework. Other
ranks get a :class:`NoOpRun` from ``start_run``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import SimpleNamespace

#: Variables naming this process's rank in one distributed job, first found wins: torchrun,
#: Accelerate, DeepSpeed and Lightning set RANK; OpenMPI's mpirun sets
#: OMPI_COMM_WORLD_RANK; PMI/PMIx launchers set PMI_RANK/PMIX_RANK.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
#: Set when processes meet to form one job (torch's rendezvous): with these, Slurm's task
#: number is a rank; without them, ``srun -n N`` tasks are N independent runs.
_JOB_VARIABLES = ("MASTER_ADDR", "WORLD_SIZE")


def distributed_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's global rank in a distributed job, or None when not distributed.

    ``RANK`` (torchrun, Accelerate, DeepSpeed), then the MPI variables, then Slurm's
    ``SLURM_PROCID`` and ``LOCAL_RANK`` *only* when the processes form one job
    (``MASTER_ADDR`` or ``WORLD_SIZE`` set, or ``torch.distributed`` initialised): the
    tasks of a plain ``srun -n 4 python train.py`` are independent runs and each records
    its own. Under Slurm, PMI variables (which srun's MPI plugin sets for any task) count
    only once the program imported ``mpi4py``. Then Ray Train's context when the program
    already imported ``ray.train`` (never imports it).

    >>> distributed_rank({"SLURM_PROCID": "3"}), distributed_rank({"SLURM_PROCID": "3",
    ...     "MASTER_ADDR": "node1"}), distributed_rank({"RANK": "2"})
    (None, 3, 2)
    """
    env = os.environ if environ is None else environ
    value = _launcher_value(env, RANK_VARIABLES, signed=True)
    if value is not None:
        return int(value)
    one_job = any(env.get(v) for v in _JOB_VARIABLES) or _torch_distributed()
    if one_job:
        value = _launcher_value(env, ("SLURM_PROCID", "LOCAL_RANK"))
        if value is not None:
            return int(value)
    return _ray_train("get_world_rank")


def _launcher_value(env: Mapping[str, str], names: tuple[str, ...], *,
                    signed: bool = False) -> str | None:
    """The first of ``names`` that holds a whole number. Under Slurm, PMI variables (which
    srun's MPI plugin sets for any task) count only once the program imported ``mpi4py``.

    >>> _launcher_value({"SLURM_PROCID": "1", "PMI_RANK": "1"}, ("PMI_RANK",))
    >>> _launcher_value({"PMI_RANK": "1"}, ("PMI_RANK",))
    '1'
    """
    slurm = "SLURM_PROCID" in env
    for name in names:
        if slurm and name.startswith("PMI") and "mpi4py" not in sys.modules:
            continue
        value = env.get(name, "").strip()
        if (value.lstrip("-") if signed else value).isdigit():
            return value
    return None


def _ray_train(method: str) -> int | None:
    """Ray Train's ``get_context().METHOD()`` when the program already imported
    ``ray.train`` (never imports it) and runs in a Ray Train worker, else None."""
    if "ray.train" not in sys.modules:
        return None
    try:
        value = getattr(sys.modules["ray.train"].get_context(), method)()
    except Exception:  # not inside a Ray Train worker
        return None
    return int(value) if value is not None else None


def _torch_distributed() -> bool:
    """Whether the program already initialised ``torch.distributed`` (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    try:
        return bool(dist is not None and dist.is_available() and dist.is_initialized())
    except Exception:
        return False


def distributed_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What rank 0 (or an independent Slurm task) records about the job it belongs to.

    >>> distributed_tags({"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_NTASKS": "4"})
    {'repro.slurm.job': '77', 'repro.slurm.task': '2 of 4'}
    """
    env = os.environ if environ is None else environ
    tags = {}
    size = _world_size(env)
    if size:
        tags["repro.distributed.world_size"] = size
    if env.get("SLURM_JOB_ID"):
        tags["repro.slurm.job"] = env["SLURM_JOB_ID"]
        if env.get("SLURM_PROCID"):
            total = env.get("SLURM_NTASKS")
            tags["repro.slurm.task"] = env["SLURM_PROCID"] + (f" of {total}" if total else "")
    return tags


def _world_size(env: Mapping[str, str]) -> str | None:
    """How many processes the job has, as its launcher says (the rank's counterpart).

    >>> _world_size({"OMPI_COMM_WORLD_SIZE": "4"}), _world_size({"SLURM_PROCID": "0",
    ...     "PMI_SIZE": "2"})
    ('4', None)
    """
    value = _launcher_value(env, ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if value is not None:
        return value
    size = _ray_train("get_world_size")
    return str(size) if size is not None else None


class NoOpRun:
    """What :func:`start_run` returns on a distributed rank other than 0.

    Only rank 0 records a run. The stand-in works as a context manager (``with`` gives
    the stand-in itself back and ends nothing), is falsy, and has ``info.run_id`` None
    and empty ``data``, so code can test ``if run:`` before logging. It starts no MLflow
    run: an ``mlflow.log_metric`` call on such a rank starts a run of MLflow's own, as
    it would without repro, so guard logging with the rank.

    >>> with NoOpRun(rank=1) as run:
    ...     print(run.info.run_id, bool(run), run.rank)
    None False 1
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.info = SimpleNamespace(run_id=None, run_name=None, experiment_id=None,
                                    status="SKIPPED", artifact_uri=None)
        self.data = SimpleNamespace(metrics={}, params={}, tags={})

    def __enter__(self) -> NoOpRun:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NoOpRun(rank={self.rank})"
