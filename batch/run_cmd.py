"""``imagebatch run``: from the parsed flags to a finished run (job list or ``--select``, the
progress display, the metrics file, the summary on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from .client import ZecClient
from .credentials import DEFAULT_ENDPOINT, parse_endpoint, resolve_credentials
from .errors import JobListError, RunDirectoryError, UsageError
from .flags import OPTION_FIELDS
from .journal import RunDirectory
from .live import make_progress
from .options import RunOptions
from .output import print_json
from .report import render_summary
from .run import Run
from .run.refusal import restore_before_refusal
from .snapshot import JobSource

__all__ = ["cmd_run", "default_out"]


def default_out() -> Path:
    # Two runs started in the same second must not share a directory: add 4 random hex digits.
    return Path("runs") / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def cmd_run(args: argparse.Namespace) -> int:
    """Run ``imagebatch run``; returns the exit code.

    A resume refused as bad input (exit 2: a flag, the job list, the run directory) first starts
    the instances its run stopped and did not see RUNNING again: refusing must not leave them down.

    Args:
        args: the parsed command line.
    """
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out: the run directory to continue")
    if args.select and args.job_list is not None:
        raise UsageError("give a JOBLIST or --select, not both")
    if args.job_list is None and not args.select and not args.resume:
        raise UsageError("give a JOBLIST, --select, or --resume with --out to continue a run")
    resolved = resolve_credentials(os.environ, Path.home())
    for note in resolved.notes:
        _say(args, f"note: {note}")
    try:
        return _cmd_run(args, resolved.credentials)
    except Exception as exc:
        if args.resume and _refusal(exc):
            anyio.run(_restore_refused, args, resolved.credentials)
        raise


def _say(args: argparse.Namespace, text: str) -> None:
    """A line for the user on stderr: text, or with ``--log-format json`` one JSON object (so a
    log collector parses every line the run writes there)."""
    if getattr(args, "log_format", "text") == "json":
        print(json.dumps({"event": "notice", "message": text}, ensure_ascii=False), file=sys.stderr, flush=True)
    else:
        print(f"imagebatch: {text}", file=sys.stderr)


def _refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error its group holds) is a refusal as bad input (exit 2)."""
    if isinstance(exc, UsageError | RunDirectoryError | JobListError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_refusal(inner) for inner in exc.exceptions)
    return False


async def _restore_refused(args: argparse.Namespace, credentials: Any) -> None:
    """Start what the refused resume's run stopped (see :func:`batch.run.refusal.restore_before_refusal`)."""
    if getattr(args, "leave_stopped", False):
        return
    directory = RunDirectory(args.out)
    try:
        directory.lock()
    except (RunDirectoryError, OSError):
        return  # another process holds the run: it restores what it owes
    try:
        endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or None
        try:
            if endpoint is not None:
                parse_endpoint(endpoint)
        except UsageError:
            endpoint = None  # the run's own API
        await restore_before_refusal(
            directory,
            credentials=credentials,
            endpoint=endpoint,
            options=RunOptions(),
            client_factory=ZecClient,
            notice=lambda text: _say(args, text),
        )
    finally:
        directory.unlock()


def _cmd_run(args: argparse.Namespace, credentials: Any) -> int:
    # Not given: a new run uses the default API, a resumed one the API it started with.
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or None
    if endpoint is not None:
        parse_endpoint(endpoint)
    metrics = None
    if args.metrics_file is not None:
        from .metrics import MetricsFile

        metrics = MetricsFile(args.metrics_file, job_name=args.job_name, policy=getattr(args, "policy", "default"))
        metrics.check()  # a missing directory is bad input: say so before anything is sent
    args.out = args.out or default_out()
    given = {name: value for name, value in vars(args).items() if name in OPTION_FIELDS}
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
            notice=lambda text: _say(args, text),
            credentials=credentials,
            endpoint=endpoint,
            progress=_progress_to(display, watch),
            handle_signals=True,
            verbose=args.verbose,
        )
        try:
            outcome = anyio.run(_execute, run, metrics, watch, lambda text: _say(args, text))
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
        _say(args, "--select is not resolved again: a resume acts on the run's own job list")
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
    _say(args, f"--select: {len(instances)} instances")
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


async def _execute(run: Run, metrics: Any, watch: Any, say: Callable[[str], None]) -> Any:
    """The run, with the metrics file written beside it (every 15 s, and its last numbers at the end)."""
    if metrics is None:
        return await run.execute()
    from .metrics import MetricsTicker

    def failed_write(exc: OSError) -> None:
        where = exc.filename or metrics.path
        say(f"warning: cannot write the metrics file {where}: {exc.strerror or exc}")

    ticker = MetricsTicker(metrics, watch.snapshot, on_error=failed_write)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        try:
            outcome = await run.execute()
        finally:
            ticker.stop()
        watch.ended(outcome.exit_code, outcome.summary)
    return outcome
