"""The ``repro`` command: show, diff, sync and re-run recorded runs.

The rule this module keeps: it only parses arguments and prints; the work happens in
``_runs``, ``_report``, ``_sync`` and ``_rerun``. A problem the user can fix prints one
line, ``repro: error: <what> ; <what to do>``, and exits 1 without a traceback
(``REPRO_DEBUG=1`` shows tracebacks of unexpected errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._errors import ReproError
from ._version import __version__

_EPILOG = """\
environment:
  MLFLOW_TRACKING_URI  tracking server (or pass --tracking-uri)
  REPRO_SPOOL_DIR      spool folder (default ~/.cache/repro/spool)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro",
        description="Show, compare, upload and re-run runs recorded by repro.start_run().",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def uri_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking-uri", metavar="URI",
                       help="tracking server (default: $MLFLOW_TRACKING_URI)")

    show = sub.add_parser("show", help="what a run recorded, readable")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--file", metavar="NAME",
                      help="print one recorded file instead (packages.txt, environment.json, "
                      "diff.patch, ...: `repro show RUN_ID` lists them)")
    uri_option(show)

    diff = sub.add_parser("diff", help="code, package and argument differences of two runs")
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")
    uri_option(diff)

    sync = sub.add_parser("sync", help="upload spooled runs to their tracking server")
    sync.add_argument("--spool-dir", metavar="DIR", help="default: $REPRO_SPOOL_DIR")
    sync.add_argument("--tracking-uri", metavar="URI",
                      help="upload here instead of the server each run was meant for")

    rerun = sub.add_parser(
        "rerun",
        help="check out a run's commit in a worktree, apply its diff, run its command",
        description="Re-run a recorded run from inside a clone of its repository. Anything "
        "after `--` replaces the recorded command; --set changes one of its parsed "
        "arguments.",
    )
    rerun.add_argument("run_id", metavar="RUN_ID")
    rerun.add_argument("--dry-run", action="store_true",
                       help="check and print everything, check out and run nothing")
    rerun.add_argument("--keep", action="store_true", help="keep the worktree afterwards")
    rerun.add_argument("--worktree", metavar="DIR", help="where to check out (must not exist)")
    rerun.add_argument("--allow-partial-diff", action="store_true",
                       help="re-run even if the recorded diff was cut for size")
    rerun.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       dest="sets",
                       help="change a parsed argument (a param: lr, args.lr, db.host, "
                       "config.db.host) in the recorded command; repeatable. Supplies a "
                       "secret that the record has redacted")
    rerun.add_argument("--as-job", action="store_true",
                       help="in an Atelier session: re-run it as a job (its own container, "
                       "sized by a profile) from this folder of the home, and follow its output")
    rerun.add_argument("--profile", metavar="P",
                       help="with --as-job: the job's profile (default: the one the run "
                       "recorded, else this session's)")
    uri_option(rerun)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repro`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    override: list[str] | None = None
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, override = args_list[:cut], args_list[cut + 1 :] or None
    args = _parser().parse_args(args_list)
    try:
        return _dispatch(args, override)
    except ReproError as exc:
        print(f"repro: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("repro: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("REPRO_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"repro: error: {type(exc).__name__}: {text} (REPRO_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, override: list[str] | None) -> int:
    if override is not None and args.command != "rerun":
        raise ReproError("`--` followed by a command is only for `repro rerun`")
    if args.command == "sync":
        from ._sync import sync

        result = sync(spool_dir=args.spool_dir, tracking_uri=args.tracking_uri, echo=print)
        return 0 if result.ok else 1

    from . import _report, _runs

    if args.command == "show":
        run = _runs.load(args.run_id, uri=args.tracking_uri)
        if args.file:
            sys.stdout.flush()
            sys.stdout.buffer.write(_report.recorded_file(run, args.file))
            sys.stdout.buffer.flush()
            return 0
        sys.stdout.write(_report.show(run))
        return 0
    if args.command == "diff":
        a = _runs.load(args.run_a, uri=args.tracking_uri)
        b = _runs.load(args.run_b, uri=args.tracking_uri)
        sys.stdout.write(_report.diff(a, b))
        return 0
    if args.command == "rerun":
        from ._rerun import rerun

        if args.profile and not args.as_job:
            raise ReproError("--profile is for --as-job: add --as-job to re-run it as a job "
                             "on that profile")
        run = _runs.load(args.run_id, uri=args.tracking_uri)
        if args.as_job:
            from ._rerun_job import rerun_as_job

            return rerun_as_job(run, args, override)
        return rerun(
            run,
            dry_run=args.dry_run,
            keep=args.keep,
            worktree=args.worktree,
            allow_partial_diff=args.allow_partial_diff,
            command=override,
            sets=args.sets,
        )
    raise AssertionError(args.command)  # argparse allows only the commands above


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
