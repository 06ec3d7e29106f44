"""``imagebatch prune``'s work: the retention rules on their own, in a crash-safe run directory.

    imagebatch prune [JOBLIST] --policy NAME --keep N [--max-age DAYS] [--orphans]
                     [--prune-failed] [--dry-run] [--out DIR] [--resume]

One listing of the policy's images, a plan (printed as a table), then DeleteImages by
:class:`~batch.prune.Pruner`. The run directory is a run's: ``run.json`` (the settings and the
retention's ``now``, kept by a resume), the job list's copy, ``journal.log`` (each DeleteImages
call's ids are durable before it is sent), ``results.jsonl`` (one line per instance: kept,
pruned and failed ids, with reasons) and ``summary.json`` (images deleted, kept, failed to
delete). ``--resume`` lists again and finishes: images already gone or DELETING are never sent
again. ``--dry-run`` lists and prints the plan, and writes and deletes nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from .credentials import DEFAULT_ENDPOINT, Credentials, parse_endpoint
from .errors import ApiError, FatalRunError, RunDirectoryError, UsageError
from .header import RunHeader, new_run_id
from .journal import JOURNAL_FILE, JournalWriter, RunDirectory, read_journal, rebuild_results, write_atomic
from .models import Status
from .prune import IDENTITY_FIELDS, ApiCounters, Pruner, PruneSettings, make_client
from .prunereport import instance_record, prune_summary, render_plan, resume_prune_command
from .retention import DELETING, RetentionPlan, plan_retention
from .snapshot import JobSource, file_sha256, same_bytes, snapshot_name, take_snapshot
from .sources import JobList, detect_format
from .summary import EXIT_FAILED, EXIT_FATAL, EXIT_OK, segment_record

__all__ = ["COMMAND", "PruneRequest", "run_prune"]

#: ``run.json``'s ``options.command`` of a prune (a run's has none).
COMMAND = "prune"
_SUMMARY = "summary.json"


@dataclass(frozen=True, slots=True)
class PruneRequest:
    """One ``imagebatch prune`` invocation.

    Args:
        source: the job list (``None``: none given).
        fmt: ``--format``.
        out_dir: the run directory (``None`` with ``dry_run``).
        settings: the flags.
        explicit: names of the settings given on the command line (a resume keeps the others).
        resume: ``--resume``.
        dry_run: ``--dry-run``.
        credentials: the API credentials.
        endpoint: the API base URL (``None``: a resume's own, else the default).
        now: the time ``--max-age`` counts back from (a resume keeps its run's).
    """

    source: JobSource | None
    fmt: str | None
    out_dir: Path | None
    settings: PruneSettings
    explicit: frozenset[str]
    resume: bool
    dry_run: bool
    credentials: Credentials
    endpoint: str | None
    now: datetime


def _jobs(path: Path, fmt: str | None, display: str) -> tuple[frozenset[str], dict[str, int]]:
    """The job list's instance ids and their lines (the list must validate)."""
    jobs = JobList(path, fmt=fmt, display=display)
    jobs.check()
    lines = {job.instance_id: job.line for job in jobs}
    return frozenset(lines), lines


@contextmanager
def _readable(source: JobSource) -> Iterator[Path]:
    if source.path is not None:
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="imagebatch-") as tmp:
        spooled = Path(tmp) / "job-list"
        take_snapshot(source, spooled)
        yield spooled


async def run_prune(request: PruneRequest, *, out: TextIO | None = None) -> int:
    """Run one prune (or its dry run); print the plan and the outcome; return the exit code.

    Args:
        request: what to do.
        out: where the plan and outcome go (default: stdout).
    """
    stream = out or sys.stdout
    if request.dry_run:
        return await _dry_run(request, stream)
    assert request.out_dir is not None
    directory = RunDirectory(request.out_dir)
    directory.lock()
    try:
        return await _Prune(request, directory, stream).execute()
    finally:
        directory.unlock()


async def _dry_run(request: PruneRequest, stream: TextIO) -> int:
    request.settings.check()
    ids, _ = _source_jobs(request)
    endpoint = request.endpoint or DEFAULT_ENDPOINT
    async with make_client(request.settings, request.credentials, endpoint, ApiCounters()) as client:
        images = await Pruner(client, request.settings).list_images()
    plan = plan_retention(images, request.settings.retention(request.now, ids))
    print(render_plan(plan, scope=_scope(plan, ids, request.settings), missing=_missing(plan, ids)), file=stream)
    count = len(plan.deletions())
    print(f"dry run: nothing was deleted; {count} image(s) would be deleted", file=stream)
    return EXIT_OK


def _source_jobs(request: PruneRequest) -> tuple[frozenset[str], dict[str, int]]:
    if request.source is None:
        return frozenset(), {}
    with _readable(request.source) as path:
        fmt = detect_format(Path(request.source.suffix_name), request.fmt, display=request.source.label)
        return _jobs(path, fmt, request.source.label)


def _scope(plan: RetentionPlan, ids: frozenset[str], settings: PruneSettings) -> set[str]:
    """The instances this prune acts on: the job list's, and with --orphans every other one."""
    return set(ids) | ({p.instance_id for p in plan.instances} if settings.orphans else set())


def _missing(plan: RetentionPlan, ids: frozenset[str]) -> set[str]:
    return set(ids) - {p.instance_id for p in plan.instances}


class _Prune:
    """One process's work on a prune's run directory (locked by the caller)."""

    def __init__(self, request: PruneRequest, directory: RunDirectory, stream: TextIO) -> None:
        self.request = request
        self.directory = directory
        self.stream = stream
        self.counters = ApiCounters()
        self.segment_id = uuid.uuid4().hex[:8]
        self.started_at = time.time()
        self.exit_code: int | None = None
        self.stopped_by: str | None = None
        self.pruner: Pruner | None = None
        self.results: dict[str, Mapping[str, Any]] = {}

    # ----- the run directory -----------------------------------------------------------------

    def _prepare(self) -> tuple[RunHeader, PruneSettings, frozenset[str], dict[str, int]]:
        d, r = self.directory, self.request
        if not d.exists:
            return self._start()
        if not r.resume:
            msg = f"{d.path} already holds a run; pass --resume to continue it, or use another --out"
            raise RunDirectoryError(msg)
        header = d.read_header()
        if header.options.get("command") != COMMAND:
            msg = f"{d.path} holds an imagebatch run, not a prune; continue it with imagebatch run --resume"
            raise RunDirectoryError(msg)
        try:
            stored = PruneSettings.from_record(header.options)
        except (TypeError, ValueError) as exc:
            msg = f"{d.file('run.json')} {exc}; this directory cannot be resumed"
            raise RunDirectoryError(msg) from exc
        settings = self._combine(stored)
        if header.snapshot is None:
            if r.source is not None:
                raise RunDirectoryError("this prune was started without a job list; resume it without JOBLIST")
            return header, settings, frozenset(), {}
        copy = d.file(header.snapshot)
        if header.snapshot_sha256 is not None and file_sha256(copy) != header.snapshot_sha256:
            raise RunDirectoryError(f"{copy} was edited since the prune started; it cannot be resumed")
        if r.source is not None:
            with _readable(r.source) as given:
                if not same_bytes(given, copy):
                    msg = f"{r.source.label} differs from the job list the prune started with; resume without JOBLIST"
                    raise RunDirectoryError(msg)
        ids, lines = _jobs(copy, header.fmt, header.job_list or copy.name)
        return header, settings, ids, lines

    def _combine(self, stored: PruneSettings) -> PruneSettings:
        """The stored settings, with the pacing flags given again; a changed rule is refused."""
        given, changes = self.request.settings, {}
        for f in fields(PruneSettings):
            if f.name not in self.request.explicit:
                continue
            value, before = getattr(given, f.name), getattr(stored, f.name)
            if f.name in IDENTITY_FIELDS and value != before:
                flag = "--max-age" if f.name == "max_age_days" else "--" + f.name.replace("_", "-")
                msg = f"{flag} {value} differs from the prune's {before}; a resumed prune keeps its rules"
                msg += " (start a new prune with a new --out to change them)"
                raise RunDirectoryError(msg)
            changes[f.name] = value
        settings = replace(stored, **changes)
        settings.check()
        return settings

    def _start(self) -> tuple[RunHeader, PruneSettings, frozenset[str], dict[str, int]]:
        d, r = self.directory, self.request
        r.settings.check()
        started = datetime.now(UTC)
        snapshot = sha = fmt = None
        ids: frozenset[str] = frozenset()
        lines: dict[str, int] = {}
        if r.source is not None:
            fmt = detect_format(Path(r.source.suffix_name), r.fmt, display=r.source.label)
            snapshot = snapshot_name(fmt)
            sha = take_snapshot(r.source, d.file(snapshot))
            try:
                ids, lines = _jobs(d.file(snapshot), fmt, r.source.label)
            except UsageError:
                d.file(snapshot).unlink(missing_ok=True)  # no run started: leave no copy behind
                raise
        header = RunHeader(
            run_id=new_run_id(started),
            created_at=started,
            date=r.now,
            job_list=r.source.display if r.source is not None else "",
            snapshot=snapshot,
            fmt=fmt,
            # No name template: a run resumed on this directory by mistake has no names to make.
            name_template="",
            endpoint=r.endpoint or DEFAULT_ENDPOINT,
            options={"command": COMMAND, **r.settings.to_record()},
            snapshot_sha256=sha,
        )
        d.write_header(header)
        return header, r.settings, ids, lines

    def _segment(self) -> dict[str, Any]:
        return segment_record(
            segment_id=self.segment_id,
            started_at=self.started_at,
            now=time.time(),
            calls=self.counters.calls,
            codes=self.counters.codes,
            retries=self.pruner.retries if self.pruner is not None else 0,
            stopped_by=self.stopped_by,
            exit_code=self.exit_code,
        )

    # ----- the work --------------------------------------------------------------------------

    async def execute(self) -> int:
        header, settings, ids, lines = self._prepare()
        d = self.directory
        state = read_journal(d.file(JOURNAL_FILE))
        rebuild_results(d, state)
        self.results = dict(state.results)
        endpoint = self.request.endpoint or header.endpoint or DEFAULT_ENDPOINT
        parse_endpoint(endpoint)
        writer = JournalWriter(d)
        writer.checkpoint = self._segment
        fatal: ApiError | None = None
        try:
            client = make_client(settings, self.request.credentials, endpoint, self.counters)
            async with client, anyio.create_task_group() as tg:
                tg.start_soon(writer.run)
                self.pruner = Pruner(client, settings)
                try:
                    fatal = await self._work(self.pruner, settings, header.date, ids, lines, state.deleting, writer)
                finally:
                    self.exit_code = self._exit_code(fatal)
                    self.stopped_by = None if fatal is None else f"fatal:{fatal.code}"
                    writer.note()  # the last checkpoint, with the exit code
                    await writer.close()
        except BaseException:
            writer.close_now()
            raise
        self._write_summary(header, settings)
        if fatal is not None:
            print(f"imagebatch: error: {fatal}", file=sys.stderr)
            print(f"imagebatch: fix the cause, then resume with:\n  {resume_prune_command(d.path)}", file=sys.stderr)
        return self._exit_code(fatal)

    def _exit_code(self, fatal: ApiError | None) -> int:
        if fatal is not None:
            return EXIT_FATAL
        failed = any(r.get("status") == Status.FAILED.value for r in self.results.values())
        return EXIT_FAILED if failed else EXIT_OK

    async def _work(
        self,
        pruner: Pruner,
        settings: PruneSettings,
        now: datetime,
        ids: frozenset[str],
        lines: Mapping[str, int],
        journaled: Mapping[str, str],
        writer: JournalWriter,
    ) -> ApiError | None:
        try:
            images = await pruner.list_images()
        except ApiError as err:  # retried already: nothing was deleted, --resume lists again
            return err
        plan = plan_retention(images, settings.retention(now, ids))
        scope = _scope(plan, ids, settings)
        print(render_plan(plan, scope=scope, missing=_missing(plan, ids)), file=self.stream)
        plans = {p.instance_id: p for p in plan.instances}
        # Images an earlier process sent DeleteImages for, now gone or DELETING: deleted by this prune.
        live = {i.image_id for i in images if i.status != DELETING}
        done = {i for i, r in self.results.items() if Status(str(r.get("status"))).final}
        pending = sorted(scope - done)
        pruned: dict[str, list[str]] = {i: [] for i in pending}
        for image_id, instance_id in journaled.items():
            if instance_id in pruned and image_id not in live:
                pruned[instance_id].append(image_id)
        failed: dict[str, dict[str, Mapping[str, Any]]] = {i: {} for i in pending}
        deletions = [(image_id, inst) for image_id, inst in plan.deletions() if inst in pruned]
        remaining = Counter(inst for _, inst in deletions)
        started = time.time()

        def finish(instance_id: str, status: Status | None = None) -> None:
            record = instance_record(
                instance_id,
                plan=plans.get(instance_id),
                pruned=pruned[instance_id],
                failed=failed[instance_id],
                line=lines.get(instance_id),
                started_at=started,
                ended_at=time.time(),
                status=status,
            )
            self.results[instance_id] = record
            writer.result_record(record)

        def resolved(image_id: str, instance_id: str, error: Mapping[str, Any] | None) -> None:
            if error is None:
                pruned[instance_id].append(image_id)
            else:
                failed[instance_id][image_id] = error
            remaining[instance_id] -= 1
            if remaining[instance_id] == 0:
                finish(instance_id)

        for instance_id in pending:
            if remaining[instance_id] == 0:
                finish(instance_id)
        try:
            await pruner.delete(deletions, before_send=writer.deleting, resolved=resolved)
        except FatalRunError as err:
            for instance_id in pending:
                if remaining[instance_id] > 0:
                    finish(instance_id, Status.INTERRUPTED)  # not final: --resume finishes it
            return err
        return None

    def _write_summary(self, header: RunHeader, settings: PruneSettings) -> None:
        d = self.directory
        state = read_journal(d.file(JOURNAL_FILE))
        summary = prune_summary(
            header=header,
            settings=settings.to_record(),
            out_dir=d.path,
            results=list(state.results.values()),
            segments=list(state.segments.values()),
            stopped_by=self.stopped_by,
            exit_code=self.exit_code,
        )
        write_atomic(d.file(_SUMMARY), json.dumps(summary, indent=2).encode() + b"\n")
        images = summary["images"]
        print(
            f"deleted {images['deleted']} image(s), kept {images['kept']}, failed to delete "
            f"{images['failedToDelete']}; results in {d.file('results.jsonl')}",
            file=self.stream,
        )
