"""One run per job in distributed training, and one run per task for Slurm's independent
``srun -n`` tasks. The launchers' environments as they set them, real subprocesses, a
real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest
from repro._cli import main
from repro._run import distributed_rank
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
