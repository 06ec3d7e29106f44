"""The ``imagebatch`` command: parse, build, run, map errors to exit codes.

Exit codes (as in ``--help`` and README): 0 every job succeeded or was skipped; 1 some jobs
failed; 2 bad input or usage (nothing sent); 3 the run stopped early (fatal API error,
unwritable run directory, job list changed under it); 4 ``--halt`` or ``--canary`` halted the
run; 5 an instance the run stopped (``--stop-running``) is not RUNNING again; 130 / 143 stopped
by SIGINT / SIGTERM.
Presentation (progress, summary) lives in :mod:`batch.report` and :mod:`batch.live`, the run flags
in :mod:`batch.flags`, the run command in :mod:`batch.run_cmd`; this module parses and dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio

from . import inventory_cmd, plan_cmd, report_cmd
from ._version import __version__
from .config import add_config_arguments, apply_config
from .errors import ImagebatchError, JobListError, RunDirectoryError, UsageError
from .flags import OPTION_FIELDS, add_job_list_args, add_nightly_args, add_run_args, out_dir_arg
from .header import new_run_id
from .naming import DEFAULT_NAME_TEMPLATE
from .output import add_output_option, print_json, validation_record
from .prunecli import add_prune_parser, cmd_prune
from .report import resume_command
from .run_cmd import cmd_run
from .snapshot import JobSource, take_snapshot
from .sources import JobList, detect_format
from .summary import EXIT_BAD_INPUT, EXIT_FATAL

__all__ = ["main"]

#: The exit codes as ``--help`` shows them; README's table says the same.
EXIT_CODES_HELP = """exit codes:
  0        every job succeeded, or was skipped because its image already exists
  1        some jobs failed, or --keep could not delete some old images (see results.jsonl)
  2        bad input or usage (job list, flag, credentials, run directory); nothing was sent
  3        the run stopped early (fatal API error, unwritable run directory, job list changed);
           the last lines say why and how to resume
  4        --halt or --canary halted the run: too many jobs failed; the rest were not started
  5        --stop-running: an instance the run stopped is not RUNNING again (overrides 0, 1, 3, 4);
           the last lines name them; --resume on the same directory starts them
  130/143  stopped by SIGINT/SIGTERM after draining; the last lines say how to resume"""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line grammar.

    Args:
        argv: the arguments about to be parsed: the ``fake-server`` flags (and the fake's
            modules) are added only when they name that command, so ``--help`` and ``validate``
            import nothing of the fake. ``None``: the whole grammar.
    """
    parser = argparse.ArgumentParser(
        prog="imagebatch",
        description="Snapshot fleets of Zenlayer ZEC instances into custom images (CreateImage), exactly once.",
        epilog=EXIT_CODES_HELP,
        # The epilog is a table: keep its lines as written.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imagebatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="image every instance in a job list")
    add_job_list_args(run, optional=True)
    add_run_args(run)
    add_nightly_args(run)
    add_config_arguments(run)
    validate = sub.add_parser("validate", help="check a job list and report every problem")
    add_job_list_args(validate)
    add_output_option(validate)
    add_prune_parser(sub)
    demo = sub.add_parser("demo", help="run the sample job list against an in-process fake API")
    demo.add_argument(
        "--out",
        type=out_dir_arg,
        help="run directory, which must not hold a run yet (default: runs/demo-<UTC timestamp>)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    fake = sub.add_parser("fake-server", help="serve the fake Zenlayer API on loopback")
    if argv is None or "fake-server" in argv:
        from .fake.cli import add_arguments as add_fake_arguments  # no server, no aiohttp.web

        add_fake_arguments(fake)
    plan = sub.add_parser(
        "plan",
        help="what a run would do (states, skips, failures, calls, time), changing nothing",
        description="Read what a run reads first and decide every job as the run would; change nothing. "
        "Exit 0: the run would go through; 1: some jobs would fail or the quota would be met; "
        "2: bad input; 3: the API could not be asked.",
    )
    add_job_list_args(plan, optional=True)
    add_run_args(plan)
    plan_cmd.add_arguments(plan)
    add_config_arguments(plan)
    inventory_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    source = JobSource.from_argument(args.job_list)
    template = getattr(args, "name_template", DEFAULT_NAME_TEMPLATE)
    with _readable_again(source) as path:
        fmt = detect_format(Path(source.suffix_name), getattr(args, "fmt", None), display=source.label)
        now = datetime.now(UTC)
        # A run id of the real shape and length: names made with {run_id} check as the run's will.
        jobs = JobList(path, fmt=fmt, name_template=template, date=now, run_id=new_run_id(now), display=source.label)
        result = jobs.validate()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output == "json":
        print_json(validation_record(source.label, result))
    if not result.ok:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        print(f"{len(result.problems)} problem(s); nothing would be sent", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{source.label}: {result.jobs} jobs, no problems", file=sys.stderr if args.output == "json" else sys.stdout)
    return 0


@contextlib.contextmanager
def _readable_again(source: JobSource) -> Iterator[Path]:
    """A path to the job list that can be read twice: the file, or a spooled copy of a stream."""
    if source.path is not None:
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="imagebatch-") as tmp:
        spooled = Path(tmp) / "job-list"
        take_snapshot(source, spooled)
        yield spooled


def _cmd_plan(args: argparse.Namespace) -> int:
    return plan_cmd.main(args, plan_cmd.options_from(args, OPTION_FIELDS))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return anyio.run(run_demo, args.out, args.quiet)


def _cmd_fake_server(args: argparse.Namespace) -> int:
    from .fake.cli import serve

    return anyio.run(serve, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``imagebatch`` and ``python -m batch``; returns the exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    if args.command in ("run", "plan"):
        try:
            # Parse again with the file's values as defaults: flags given still win.
            configure = plan_cmd.apply_config if args.command == "plan" else apply_config
            args = configure(parser, args, argv, os.environ)
        except UsageError as exc:
            print(f"imagebatch: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    commands = {"run": cmd_run, "validate": _cmd_validate, "demo": _cmd_demo, "fake-server": _cmd_fake_server}
    commands |= {"inventory": inventory_cmd.main, "report": report_cmd.main, "plan": _cmd_plan}
    commands["prune"] = cmd_prune
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("imagebatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A task group wraps what its tasks raise: look inside for the error that means something.
        cause = _first_known(exc)
        if cause is None:
            raise
        return _report_error(cause, args)


def _report_error(exc: ImagebatchError | OSError, args: argparse.Namespace) -> int:
    """Print what went wrong and what to do (no traceback); return the exit code."""
    if isinstance(exc, JobListError):
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the job list; nothing was sent", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(exc, UsageError | RunDirectoryError):
        print(f"imagebatch: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(exc, ImagebatchError):
        print(f"imagebatch: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    where = f" ({exc.filename})" if exc.filename else ""
    if args.command not in ("run", "demo"):
        # fake-server: e.g. the port is taken; nothing was started.
        print(f"imagebatch: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # The run directory became unwritable (disk full, permissions) or its files vanished.
    print(f"imagebatch: error: cannot write the run's files{where}: {exc.strerror or exc}", file=sys.stderr)
    if args.command == "demo":
        print("imagebatch: fix the cause and run the demo again with a new --out", file=sys.stderr)
    else:
        out = getattr(args, "out", None)
        again = resume_command(out if out is not None else "RUN_DIRECTORY")
        print("imagebatch: what was journaled before this is safe; fix the cause, then resume with:", file=sys.stderr)
        print(f"  {again}", file=sys.stderr)
    return EXIT_FATAL


def _first_known(exc: BaseException) -> ImagebatchError | OSError | None:
    """``exc`` itself, or the first of its group's leaves that is ours or an ``OSError``."""
    if isinstance(exc, ImagebatchError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_known(inner)
            if found is not None:
                return found
    return None
