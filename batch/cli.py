"""The ``imagebatch`` command: parse, build, run, map errors to exit codes.

Exit codes: 0 no job failed; 1 some jobs failed; 2 bad input or usage (nothing sent);
3 the run stopped early (fatal API error, unwritable run directory, job list changed under it);
130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from ._version import __version__
from .credentials import DEFAULT_ENDPOINT, credentials_from_env, parse_endpoint
from .errors import ImagebatchError, JobListError, RunDirectoryError, UsageError
from .naming import DEFAULT_NAME_TEMPLATE
from .runner import EXIT_BAD_INPUT, Progress, Run, RunOptions, RunOutcome
from .sources import FORMATS, JobList

__all__ = ["main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _add_job_list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_list", type=Path, metavar="JOBLIST", help="CSV, JSON or JSON Lines job list")
    parser.add_argument("--format", choices=FORMATS, help="job list format (default: from the file name)")
    parser.add_argument(
        "--name-template",
        default=DEFAULT_NAME_TEMPLATE,
        help="image name for rows without imageName; fields: any column, date, run_id (default: %(default)s)",
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    d = RunOptions()
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<UTC timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (start it if it is new)")
    parser.add_argument(
        "--concurrency", type=_positive_int, default=d.concurrency, help="requests in flight (default: %(default)s)"
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=d.rate,
        help="API requests per second, all actions (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff-base",
        type=_positive_float,
        default=d.backoff_base,
        help="first back-off window, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff-cap",
        type=_positive_float,
        default=d.backoff_cap,
        help="largest back-off window, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--busy-timeout",
        type=_non_negative_float,
        default=d.busy_timeout,
        help="give up on a busy instance after this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=d.max_attempts,
        help="tries per job on 5xx / network errors (default: %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=_non_negative_float,
        default=d.grace,
        help="seconds requests in flight may take to finish after SIGINT/SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=d.connect_timeout,
        help="seconds to connect (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=d.total_timeout,
        help="seconds for a whole request (default: %(default)s)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="end each job when its image is AVAILABLE (or FAILED), not when it starts"
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=d.poll_interval,
        help="with --wait: seconds between status polls of all awaited images (default: %(default)s)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=_positive_float,
        default=d.wait_timeout,
        help="with --wait: fail a job whose image is not AVAILABLE after this many seconds (default: %(default)s)",
    )
    parser.add_argument("--endpoint", help=f"API base URL (default: $ZENLAYER_ENDPOINT or {DEFAULT_ENDPOINT})")
    parser.add_argument("--seed", type=int, help="seed of the back-off jitter (for reproducible tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="imagebatch",
        description="Snapshot fleets of Zenlayer ZEC instances into custom images (CreateImage), exactly once.",
        epilog="Exit codes: 0 all done, 1 some jobs failed, 2 bad input, 3 fatal stop, 130/143 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"imagebatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="image every instance in a job list")
    _add_job_list_args(run)
    _add_run_args(run)
    validate = sub.add_parser("validate", help="check a job list and report every problem")
    _add_job_list_args(validate)
    demo = sub.add_parser("demo", help="run the sample job list against an in-process fake API")
    demo.add_argument("--out", type=Path, help="run directory (default: runs/demo-<UTC timestamp>)")
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    fake = sub.add_parser("fake-server", help="serve the fake Zenlayer API on loopback")
    from .fake.cli import add_arguments as add_fake_arguments  # light: no server, no aiohttp.web

    add_fake_arguments(fake)
    return parser


class ProgressPrinter:
    """Prints progress to stderr: one updating line on a terminal, a line every 10 s otherwise."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1e9

    def __call__(self, p: Progress) -> None:
        if not self.tty and p.elapsed - self._last < 10:
            return
        self._last = p.elapsed
        s = p.by_status
        done = sum(s.values())
        line = (
            f"[{p.elapsed:6.1f}s] {done}/{p.total} done (ok {s.get('succeeded', 0)}, failed {s.get('failed', 0)}, "
            f"skipped {s.get('skipped', 0)}) | in flight {p.in_flight}, retrying {p.waiting}"
            + (f", images CREATING {p.awaiting_images}" if p.awaiting_images else "")
            + " | "
            f"{p.api_calls} calls, pacing {p.rate:.1f}/s"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            if done >= p.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def render_summary(outcome: RunOutcome) -> str:
    """A short table of what happened."""
    s = outcome.summary
    by_status = s.get("byStatus", {})
    codes = ", ".join(f"{c} {n}" for c, n in s.get("byErrorCode", {}).items())
    calls = s.get("apiCalls", {})
    rows = [
        f"run {s.get('runId')}: {s.get('jobs')} jobs in {s.get('wallSeconds')} s",
        f"  succeeded  {by_status.get('succeeded', 0):>7}",
        f"  failed     {by_status.get('failed', 0):>7}" + (f"   ({codes})" if codes else ""),
        f"  skipped    {by_status.get('skipped', 0):>7}",
        f"  pending    {s.get('pending', 0):>7}",
        f"  API calls  {calls.get('total', 0):>7}   retries {s.get('retries', 0)}, "
        f"429s {calls.get('byCode', {}).get('REQUEST_LIMIT_EXCEEDED', 0)}",
        f"results:   {outcome.out_dir / 'results.jsonl'}",
        f"exit code: {outcome.exit_code}" + (f" (stopped by {s['stoppedBy']})" if s.get("stoppedBy") else ""),
    ]
    return "\n".join(rows)


def _cmd_validate(args: argparse.Namespace) -> int:
    jobs = JobList(args.job_list, fmt=args.format, name_template=args.name_template, date=datetime.now(UTC))
    result = jobs.validate()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.ok:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        print(f"{len(result.problems)} problem(s); nothing would be sent", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.job_list}: {result.jobs} jobs, no problems")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or DEFAULT_ENDPOINT
    parse_endpoint(endpoint)
    credentials = credentials_from_env()
    options = RunOptions(
        concurrency=args.concurrency,
        rate=args.rate,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        busy_timeout=args.busy_timeout,
        max_attempts=args.max_attempts,
        grace=args.grace,
        connect_timeout=args.connect_timeout,
        total_timeout=args.timeout,
        name_template=args.name_template,
        fmt=args.format,
        resume=args.resume,
        seed=args.seed,
        wait=args.wait,
        poll_interval=args.poll_interval,
        wait_timeout=args.wait_timeout,
    )
    out = args.out or Path("runs") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = Run(
        args.job_list,
        out,
        options,
        credentials=credentials,
        endpoint=endpoint,
        progress=None if args.quiet else ProgressPrinter(),
        handle_signals=True,
    )
    outcome = anyio.run(run.execute)
    print(render_summary(outcome))
    return outcome.exit_code


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return anyio.run(run_demo, args.out, args.quiet)


def _cmd_fake_server(args: argparse.Namespace) -> int:
    from .fake.cli import serve

    return anyio.run(serve, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``imagebatch`` and ``python -m batch``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"run": _cmd_run, "validate": _cmd_validate, "demo": _cmd_demo, "fake-server": _cmd_fake_server}
    try:
        return commands[args.command](args)
    except JobListError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the job list; nothing was sent", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (UsageError, RunDirectoryError) as exc:
        print(f"imagebatch: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImagebatchError as exc:
        print(f"imagebatch: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("imagebatch: interrupted", file=sys.stderr)
        return 130
    except (OSError, ExceptionGroup) as exc:
        # The run directory became unwritable (disk full, permissions) or its files vanished.
        oserror = _first_oserror(exc)
        if oserror is None:
            raise
        where = f" ({oserror.filename})" if oserror.filename else ""
        print(f"imagebatch: error: cannot write the run's files{where}: {oserror.strerror or oserror}", file=sys.stderr)
        print("imagebatch: what was journaled before this is safe; fix the cause and --resume", file=sys.stderr)
        return 3


def _first_oserror(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_oserror(inner)
            if found is not None:
                return found
    return None
