"""``repro rerun RUN_ID --as-job [--profile P]``: the same re-run, as an Atelier job.

The rule this module keeps: repro runs nothing here itself. It hands the job's command,
``python -m repro rerun RUN_ID`` with the same options, to Atelier's jobs service through
``atelier_lab.run`` (the session's own token and ``ATELIER_JOBS_URL``), from the current
folder of the home, which must be a clone of the run's repository as for a plain rerun;
then it follows the job's output and returns its exit code. The job runs the rerun in
its own container, so its run records the job (``repro.env.ATELIER_JOB``) and
``repro.rerun_of``. Outside an Atelier session it says what to run instead.
"""

from __future__ import annotations

import argparse
import sys

from ._errors import ReproError
from ._runs import RecordedRun


def job_command(run_id: str, args: argparse.Namespace, override: list[str] | None) -> list[str]:
    """The job's command: the rerun with the options given, less ``--as-job`` and ``--profile``.

    >>> ns = argparse.Namespace(dry_run=False, keep=True, worktree=None, allow_partial_diff=False,
    ...                         sets=["lr=0.2"], tracking_uri=None)
    >>> job_command("abc", ns, ["python", "t.py"])
    ['python', '-m', 'repro', 'rerun', 'abc', '--keep', '--set', 'lr=0.2', '--', 'python', 't.py']
    """
    cmd = ["python", "-m", "repro", "rerun", run_id]
    for flag in ("dry_run", "keep", "allow_partial_diff"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    if args.worktree:
        cmd += ["--worktree", args.worktree]
    for value in args.sets:
        cmd += ["--set", value]
    if args.tracking_uri:
        cmd += ["--tracking-uri", args.tracking_uri]
    return cmd + (["--", *override] if override else [])


def rerun_as_job(run: RecordedRun, args: argparse.Namespace, override: list[str] | None) -> int:
    """Submit the rerun of ``run`` as a job, follow its output; its exit code."""
    command = job_command(run.run_id, args, override)
    try:
        import atelier_lab
    except ImportError:
        raise ReproError(
            "--as-job hands the rerun to Atelier's jobs service, which this environment has not "
            "(no atelier_lab): run it in an Atelier session, or from a laptop after "
            f"`atelier login`: atelier run --profile P -- {' '.join(command)}") from None
    profile = args.profile or run.tags.get("repro.env.ATELIER_PROFILE") or None
    try:
        job = atelier_lab.run(command, profile=profile)
    except atelier_lab.JobUnavailable as exc:
        raise ReproError(f"the jobs service did not take the rerun: {exc}") from None
    print(f"repro: re-running {run.run_id} as job {job.name} on profile {job.profile}; "
          f"following its output (Ctrl-C stops following; the job goes on: "
          f"atelier logs {job.name} -f)", file=sys.stderr, flush=True)
    try:
        code = job.follow()
    except KeyboardInterrupt:
        print(f"repro: job {job.name} goes on; cancel it with atelier cancel {job.name}",
              file=sys.stderr, flush=True)
        return 130
    except atelier_lab.JobUnavailable as exc:
        raise ReproError(f"following job {job.name}: {exc}; "
                         f"`atelier logs {job.name}` tries again") from None
    ended = (f"with exit code {code}" if code is not None
             else "without an exit code (cancelled, or its container died)")
    print(f"repro: job {job.name} ended {ended}", file=sys.stderr, flush=True)
    return 1 if code is None else code
