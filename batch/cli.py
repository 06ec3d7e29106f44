"""The ``imagebatch`` command: parse, build, run, map errors to exit codes.

Exit codes (as in ``--help`` and README): 0 every job succeeded or was skipped; 1 some jobs
failed; 2 bad input or usage (nothing sent); 3 the run stopped early (fatal API error,
unwritable run directory, job list changed under it); 4 ``--halt`` or ``--canary`` halted the
run; 5 an instance the run stopped (``--stop-running``) is not RUNNING again; 130 / 143 stopped
by SIGINT / SIGTERM.
Presentation (progress, summary) lives in :mod:`batch.report`; this module parses and dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from . import inventory_cmd, plan_cmd, report_cmd
from ._version import __version__
from .config import add_config_arguments, apply_config
from .credentials import DEFAULT_ENDPOINT, parse_endpoint, resolve_credentials
from .errors import ImagebatchError, JobListError, RunDirectoryError, UsageError
from .header import new_run_id
from .live import make_progress
from .naming import DEFAULT_NAME_TEMPLATE
from .options import MIN_RATE, RunOptions
from .output import add_output_option, print_json, validation_record
from .prunecli import add_prune_parser, cmd_prune
from .report import render_summary, resume_command
from .run import Run
from .snapshot import JobSource, take_snapshot
from .sources import FORMATS, JobList, detect_format
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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _fraction(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _add_job_list_args(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument(
        "job_list",
        metavar="JOBLIST",
        nargs="?" if optional else None,
        help="CSV, JSON or JSON Lines job list; - for standard input (needs --format)"
        + ("; with --resume it may be left out (the run keeps a copy)" if optional else ""),
    )
    # SUPPRESS: an option not given is absent, so a resume can tell it from one given again.
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help="job list format (default: from the name)",
    )
    parser.add_argument(
        "--name-template",
        default=argparse.SUPPRESS,
        help="image name for rows without imageName; fields: instanceId, resourceGroupId, run_id, date with a "
        "strftime spec; see jobs/README.md "
        f"(default: {DEFAULT_NAME_TEMPLATE.replace('%', '%%')})",
    )


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    d = RunOptions()

    def option(flag: str, dest: str, kind: Callable[[str], Any], text: str, into: Any = parser) -> None:
        default = getattr(d, dest)
        into.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=f"{text} (default: {default:g})")

    parser.add_argument("--out", type=_out_dir, help="run directory (default: runs/<UTC time>-<random>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (start it if it is new)")
    option("--concurrency", "concurrency", _positive_int, "requests in flight")
    option("--rate", "rate", _rate, f"API requests per second, all actions, at least {MIN_RATE:g}")
    option("--backoff-base", "backoff_base", _positive_float, "first back-off window, seconds")
    option("--backoff-cap", "backoff_cap", _positive_float, "largest back-off window, seconds")
    option("--busy-timeout", "busy_timeout", _non_negative_float, "give up on a busy instance after this many seconds")
    option("--max-attempts", "max_attempts", _positive_int, "tries per job on 5xx / network errors")
    option("--grace", "grace", _non_negative_float, "seconds requests in flight may take after SIGINT/SIGTERM")
    option("--connect-timeout", "connect_timeout", _positive_float, "seconds to connect")
    option("--timeout", "total_timeout", _positive_float, "seconds for a whole request")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="end each job when its image is AVAILABLE (or FAILED), not when it starts (default: off)",
    )
    option(
        "--poll-interval", "poll_interval", _positive_float, "with --wait: seconds between polls of all awaited images"
    )
    option(
        "--wait-timeout", "wait_timeout", _positive_float, "with --wait: fail a job whose image is not AVAILABLE sooner"
    )
    option(
        "--lookup-delay",
        "lookup_delay",
        _non_negative_float,
        "seconds before a lost CreateImage answer is checked by name (an API may list new images late)",
    )
    power = parser.add_argument_group("live fleets: stop -> image -> start")
    for flag, dest, text in (
        ("--stop-running", "stop_running", "stop RUNNING instances, image them, start them again (default: off)"),
        ("--leave-stopped", "leave_stopped", "with --stop-running: do not start them again (default: off)"),
        ("--force-stop", "force_stop", "with --stop-running: forced shutdown from the start (default: graceful first)"),
    ):
        power.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
    option("--stop-timeout", "stop_timeout", _positive_float, "seconds a graceful stop may take", power)
    option("--start-timeout", "start_timeout", _positive_float, "seconds to be RUNNING after a start", power)
    power.add_argument(
        "--max-stopped",
        dest="max_stopped",
        default=argparse.SUPPRESS,
        help="most instances stopped by this run at once: N or N%% of the list (default: 10%%, at least 1)",
    )
    power.add_argument(
        "--max-stopped-per-group",
        dest="max_stopped_per_group",
        type=_positive_int,
        default=argparse.SUPPRESS,
        help="most instances of one job-list 'group' stopped at once (default: none)",
    )
    halting = parser.add_argument_group("halting early")
    halting.add_argument(
        "--halt",
        default=argparse.SUPPRESS,
        metavar="fail=N|fail=P%",
        help="stop starting jobs when N jobs failed, or P%% of the ended ones (counted after --halt-min jobs); "
        "drain, exit 4 (default: never)",
    )
    halting.add_argument(
        "--halt-min",
        dest="halt_min",
        type=_non_negative_int,
        default=argparse.SUPPRESS,
        help="jobs that must have ended before a --halt percentage counts (default: 20)",
    )
    halting.add_argument(
        "--canary",
        type=_non_negative_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="run the first N jobs before any other; if one fails, halt before the rest (exit 4)",
    )
    _add_keep_args(parser)
    parser.add_argument("--endpoint", help=f"API base URL (default: $ZENLAYER_ENDPOINT or {DEFAULT_ENDPOINT})")
    parser.add_argument(
        "--seed", type=int, default=argparse.SUPPRESS, help="seed of the back-off jitter (for reproducible tests)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument(
        "--verbose", action="store_true", help="also a line on stderr for each retry, failure and stop of the run"
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=30.0,
        help="seconds between progress lines when stderr is not a terminal (default: 30)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="progress lines off a terminal: text, or one JSON object a line (default: text)",
    )


def _add_keep_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s retention flags: the policy tag, and ``--keep`` inside the run."""
    keep = parser.add_argument_group("retention: keep the newest N images per instance")
    keep.add_argument(
        "--policy",
        dest="policy",
        default=argparse.SUPPRESS,
        help="the imagebatch-policy tag of every image the run makes; --keep prunes only this policy's "
        "images; a resume keeps it (default: default)",
    )
    keep.add_argument(
        "--keep",
        dest="keep",
        type=_positive_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="once an instance's new image is AVAILABLE (implies --wait), delete its older images of the "
        "policy beyond the newest N AVAILABLE (default: none deleted)",
    )
    keep.add_argument(
        "--max-age",
        dest="max_age_days",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="DAYS",
        help="with --keep: also delete AVAILABLE images older than DAYS (never the newest)",
    )
    keep.add_argument(
        "--prune-failed",
        dest="prune_failed",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="with --keep: also delete the policy's FAILED and UNAVAILABLE images (default: off)",
    )


def _add_nightly_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s flags for scheduled runs: the fleet by selection, metrics, JSON on stdout."""
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="instead of a JOBLIST: the instances the API lists by tag:K=V, zone:Z, resource-group:R, "
        "status:S (repeatable; resolved once, written into the run directory as its job list)",
    )
    parser.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="write Prometheus metrics here (node_exporter textfile collector; a .prom file), every 15 s "
        "and at the end",
    )
    parser.add_argument(
        "--job-name", default="imagebatch", help="the job_name label of the metrics (default: imagebatch)"
    )
    add_output_option(parser, ("table", "json"))


def _out_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory (an empty --out would write into the current one)")
    return Path(text)


def _rate(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_RATE:
        raise argparse.ArgumentTypeError(f"{text!r} is below {MIN_RATE:g} requests a second; nothing would be sent")
    return value


#: RunOptions fields the command line can set (argparse dests of the same name).
_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions)) - {"resume"}


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
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
    _add_job_list_args(run, optional=True)
    _add_run_args(run)
    _add_nightly_args(run)
    add_config_arguments(run)
    validate = sub.add_parser("validate", help="check a job list and report every problem")
    _add_job_list_args(validate)
    add_output_option(validate)
    add_prune_parser(sub)
    demo = sub.add_parser("demo", help="run the sample job list against an in-process fake API")
    demo.add_argument(
        "--out", type=_out_dir, help="run directory, which must not hold a run yet (default: runs/demo-<UTC timestamp>)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    fake = sub.add_parser("fake-server", help="serve the fake Zenlayer API on loopback")
    from .fake.cli import add_arguments as add_fake_arguments  # light: no server, no aiohttp.web

    add_fake_arguments(fake)
    plan = sub.add_parser(
        "plan",
        help="what a run would do (states, skips, failures, calls, time), changing nothing",
        description="Read what a run reads first and decide every job as the run would; change nothing. "
        "Exit 0: the run would go through; 1: some jobs would fail or the quota would be met; "
        "2: bad input; 3: the API could not be asked.",
    )
    _add_job_list_args(plan, optional=True)
    _add_run_args(plan)
    plan_cmd.add_arguments(plan)
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


def _default_out() -> Path:
    # Two runs started in the same second must not share a directory: add 4 random hex digits.
    return Path("runs") / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out: the run directory to continue")
    if args.select and args.job_list is not None:
        raise UsageError("give a JOBLIST or --select, not both")
    if args.job_list is None and not args.select and not args.resume:
        raise UsageError("give a JOBLIST, --select, or --resume with --out to continue a run")
    # Not given: a new run uses the default API, a resumed one the API it started with.
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or None
    if endpoint is not None:
        parse_endpoint(endpoint)
    metrics = None
    if args.metrics_file is not None:
        from .metrics import MetricsFile

        metrics = MetricsFile(args.metrics_file, job_name=args.job_name, policy=getattr(args, "policy", "default"))
        metrics.check()  # a missing directory is bad input: say so before anything is sent
    resolved = resolve_credentials(os.environ, Path.home())
    for note in resolved.notes:
        print(f"imagebatch: note: {note}", file=sys.stderr)
    credentials = resolved.credentials
    args.out = args.out or _default_out()
    given = {name: value for name, value in vars(args).items() if name in _OPTION_FIELDS}
    options = RunOptions(**given, resume=args.resume)
    with contextlib.ExitStack() as stack:
        source = _run_source(args, endpoint, credentials, options, stack)
        display = None if args.quiet else make_progress(interval=args.progress_interval, log_format=args.log_format)
        watch = None
        if metrics is not None:
            from .runmetrics import RunMetrics

            watch = RunMetrics()
        run = Run(
            source,
            args.out,
            options,
            explicit=given.keys(),
            notice=lambda text: print(f"imagebatch: {text}", file=sys.stderr),
            credentials=credentials,
            endpoint=endpoint,
            progress=_progress_to(display, watch),
            handle_signals=True,
            verbose=args.verbose,
        )
        try:
            outcome = anyio.run(_execute, run, metrics, watch)
        finally:
            if display is not None:
                display.finish()
    if args.output == "json":
        print_json(outcome.summary)
    else:
        print(render_summary(outcome.summary, out_dir=outcome.out_dir))
    return int(outcome.exit_code)


def _run_source(
    args: argparse.Namespace,
    endpoint: str | None,
    credentials: Any,
    options: RunOptions,
    stack: contextlib.ExitStack,
) -> JobSource | None:
    """The run's job list: the file given, or ``--select`` resolved once into a file (the run then
    copies it into its directory, so a ``--resume`` acts on the same instances whatever the tags
    say by then)."""
    if not args.select:
        return JobSource.from_argument(args.job_list) if args.job_list is not None else None
    if args.resume and (args.out / "run.json").exists():
        # The same command line restarts a scheduled run (systemd, cron, a retried pod): the
        # selection was resolved when the run started and the run keeps it as its job list, so
        # a resume acts on the same instances whatever their tags say now.
        print("imagebatch: --select: the run keeps the instances it selected when it started", file=sys.stderr)
        return None
    from .client import ZecClient
    from .inventory import resolve_selection, write_job_list

    async def select() -> Any:
        async with ZecClient(
            endpoint or DEFAULT_ENDPOINT,
            credentials,
            connect_timeout=options.connect_timeout,
            total_timeout=options.total_timeout,
        ) as client:
            return await resolve_selection(client, args.select)

    instances = anyio.run(select)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imagebatch-select-")))
    path = tmp / "selected.csv"
    write_job_list(instances, path)
    print(f"imagebatch: --select: {len(instances)} instances", file=sys.stderr)
    return JobSource.from_argument(str(path))


def _progress_to(display: Callable[[Any], None] | None, watch: Any) -> Callable[[Any], None] | None:
    """One progress callback feeding the display and the metrics."""
    if watch is None:
        return display
    if display is None:
        return watch.observe  # type: ignore[no-any-return]

    def both(p: Any) -> None:
        watch.observe(p)
        display(p)

    return both


async def _execute(run: Run, metrics: Any, watch: Any) -> Any:
    """The run, with the metrics file written beside it (every 15 s, and its last numbers at the end)."""
    if metrics is None:
        return await run.execute()
    from .metrics import MetricsTicker

    def failed_write(exc: OSError) -> None:
        print(f"imagebatch: warning: cannot write the metrics file: {exc.strerror or exc}", file=sys.stderr)

    ticker = MetricsTicker(metrics, watch.snapshot, on_error=failed_write)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        try:
            outcome = await run.execute()
        finally:
            ticker.stop()
        watch.ended(outcome.exit_code, outcome.summary)
    return outcome


def _cmd_plan(args: argparse.Namespace) -> int:
    return plan_cmd.main(args, plan_cmd.options_from(args, _OPTION_FIELDS))


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            # Parse again with the file's values as defaults: flags given still win.
            args = apply_config(parser, args, argv, os.environ)
        except UsageError as exc:
            print(f"imagebatch: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    commands = {"run": _cmd_run, "validate": _cmd_validate, "demo": _cmd_demo, "fake-server": _cmd_fake_server}
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
