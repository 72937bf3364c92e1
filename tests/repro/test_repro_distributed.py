"""One run per job in distributed training, and one run per task for Slurm's independent
``srun -n`` tasks. The launchers' environments as they set them, real subprocesses, a
real MLflow server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from repro._cli import main
from repro._distributed import distributed_rank
from repro_testlib import make_repo, run_id_of, run_py

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("environ", "rank"),
    [
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, 3),  # torchrun
        ({"OMPI_COMM_WORLD_RANK": "2"}, 2),  # OpenMPI's mpirun
        ({"PMIX_RANK": "1"}, 1),  # a PMIx launcher
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, None),  # srun -n 2: two runs
        ({"SLURM_PROCID": "1", "PMI_RANK": "1"}, None),  # srun's PMI plugin, no MPI program
        ({"SLURM_PROCID": "1", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}, 1),  # one job
        ({"LOCAL_RANK": "1"}, None),  # alone it says nothing about a job
        ({}, None),
    ],
)
def test_rank_from_launcher_environment(environ: dict[str, str], rank: int | None) -> None:
    assert distributed_rank(environ) == rank


def test_independent_slurm_tasks_each_record_a_run(
    tmp_path: Path, env: dict[str, str], client, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path / "repo")
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "PMI_RANK": "1"}
    task1 = run_id_of(run_py(["train.py"], repo, {**env, **slurm}))
    assert task1 != "None"
    tags = client.get_run(task1).data.tags
    assert tags["repro.slurm.job"] == "4242" and tags["repro.slurm.task"] == "1 of 2"
    task0 = run_id_of(run_py(["train.py"], repo, {**env, **slurm, "SLURM_PROCID": "0"}))
    for key in ("MLFLOW_TRACKING_URI", "REPRO_SPOOL_DIR"):
        monkeypatch.setenv(key, env[key])
    assert main(["show", task1]) == 0
    assert "job        slurm job 4242, task 1 of 2" in capsys.readouterr().out
    assert main(["diff", task0, task1]) == 0
    assert "repro.slurm.task: 0 of 2 → 1 of 2" in capsys.readouterr().out
    # The same task number inside one distributed job is a rank: nothing recorded.
    job = {**slurm, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert run_id_of(run_py(["train.py"], repo, {**env, **job})) == "None"


# Each rank starts a run; MPI's own gather brings every rank's answer to rank 0. Each rank
# writes its output to a file of its own: gforker cuts a rank's output at its first
# non-ASCII byte, and MLflow prints an emoji with every run's URL.
MPI_TRAIN = """
import json, os
from mpi4py import MPI
comm = MPI.COMM_WORLD
log = open(f"rank{comm.Get_rank()}.log", "w")
os.dup2(log.fileno(), 1)
os.dup2(log.fileno(), 2)
import mlflow, repro
with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
    if run:
        mlflow.log_metric("loss", 0.5)
ids = comm.gather(run.info.run_id, root=0)
if comm.Get_rank() == 0:
    with open("ids.json", "w") as f:
        json.dump(ids, f)
"""


def _one_run_of_the_job(client, experiment: str, ids: list[str | None], size: int) -> str:
    """Rank 0 recorded the job's only run, tagged with the job's size; the others nothing."""
    assert ids[0] and ids[1:] == [None] * (size - 1)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [ids[0]]
    tags = runs[0].data.tags
    assert tags["repro.distributed.world_size"] == str(size) and tags["repro.git"] == "repository"
    assert runs[0].data.metrics == {"loss": 0.5}
    return ids[0]


def test_an_mpi_job_records_one_run(tmp_path: Path, env: dict[str, str], client,
                                    experiment: str, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A real MPI job (MPICH, two ranks that talk through MPI): one run, rank 0's."""
    repo = make_repo(tmp_path / "repo")
    (repo / "mpi_train.py").write_text(MPI_TRAIN)
    mpiexec = Path(sys.executable).parent / "mpiexec.gforker"
    # gforker forks the ranks on this machine and talks to them over socketpairs; UCX (MPICH's
    # transport) is kept to shared memory, else it listens on the machine's address.
    proc = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "mpi_train.py"], cwd=repo,
                          env={**env, "UCX_TLS": "self,sm", "UCX_NET_DEVICES": "lo"},
                          capture_output=True, text=True, errors="replace", timeout=100)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted(repo.glob("rank*.log")))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs
    ids = json.loads((repo / "ids.json").read_text())
    run_id = _one_run_of_the_job(client, experiment, ids, 2)
    for key in ("MLFLOW_TRACKING_URI", "REPRO_SPOOL_DIR"):
        monkeypatch.setenv(key, env[key])
    assert main(["show", run_id]) == 0
    assert "rank 0 of 2 (the other ranks record nothing)" in capsys.readouterr().out


# Ray Train (its default API in Ray 2.60, "v2"): two workers, each starts a run.
RAY_TRAIN = """
import json, os, sys
import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

def loop(config):
    import mlflow, repro
    with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
        if run:
            mlflow.log_metric("loss", 0.5)
    rank = ray.train.get_context().get_world_rank()
    with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
        json.dump(run.info.run_id, f)

out = sys.argv[1]
# Logical CPUs: the trainer's controller and coordinator actors need some besides the workers.
ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1")
DataParallelTrainer(loop, train_loop_config={"out": out},
                    scaling_config=ScalingConfig(num_workers=2),
                    run_config=RunConfig(storage_path=os.path.join(out, "results"))).fit()
ray.shutdown()
"""


@pytest.mark.timeout(420)
def test_a_ray_train_job_records_one_run(tmp_path: Path, env: dict[str, str], client,
                                         experiment: str) -> None:
    """A real Ray Train job on a local Ray (loopback only): one run, world rank 0's."""
    repo = make_repo(tmp_path / "repo")
    (repo / "ray_train.py").write_text(RAY_TRAIN)
    out = tmp_path / "out"
    out.mkdir()
    # The session's own Ray settings: no usage report, every Ray process on 127.0.0.1.
    ray_env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_agent_register_timeout_ms": "120000"}
    proc = subprocess.run([sys.executable, "ray_train.py", str(out)], cwd=repo, env=ray_env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    _one_run_of_the_job(client, experiment, ids, 2)
