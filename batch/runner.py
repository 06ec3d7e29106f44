"""One batch run: job list -> journal -> worker pool -> results, summary and exit code.

The worker pool turns every failure into a result or a retry; nothing escapes the task group
(where it would cancel the other workers). Run-wide stops (a fatal API error, a signal) go
through the dispatcher, which stops handing out jobs while requests in flight finish.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from .client import CreatedImage, RequestRecord, ZecClient
from .credentials import Credentials
from .errors import (
    ApiError,
    FatalRunError,
    InstanceBusyError,
    JobListError,
    PermanentJobError,
    RunDirectoryError,
    ThrottledError,
    UsageError,
)
from .events import ATTEMPT, JOB_ENDED, LISTING_DONE, RETRY_SCHEDULED, RUN_ENDED, RUN_STARTED, RUN_STOPPING, EventLog
from .journal import EVENTS_FILE, JOURNAL_FILE, SUMMARY_FILE, JournalWriter, RunDirectory, read_journal, write_atomic
from .models import Job, JobResult, Status
from .naming import DEFAULT_NAME_TEMPLATE
from .scheduling import Dispatcher, RateMeter, full_jitter
from .sources import JobList
from .waiting import ImageWaiter

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_FATAL", "EXIT_OK", "Progress", "Run", "RunOptions", "RunOutcome"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_FATAL = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
#: Image states that mean "an image by this name is there (or on its way)".
_LIVE_IMAGE_STATES = frozenset({"AVAILABLE", "CREATING", "SYNCING", "PROCESSING"})


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Knobs of a run (the CLI flags)."""

    concurrency: int = 8
    rate: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    busy_timeout: float = 1800.0
    max_attempts: int = 8
    grace: float = 30.0
    connect_timeout: float = 10.0
    total_timeout: float = 60.0
    name_template: str = DEFAULT_NAME_TEMPLATE
    fmt: str | None = None
    resume: bool = False
    seed: int | None = None
    wait: bool = False
    poll_interval: float = 10.0
    wait_timeout: float = 3600.0

    def check(self) -> None:
        """Raise :class:`UsageError` for values no run can use."""
        checks = [
            (self.concurrency >= 1, "--concurrency must be at least 1"),
            (self.concurrency <= 1000, "--concurrency must be at most 1000"),
            (math.isfinite(self.rate) and self.rate > 0, "--rate must be a positive number"),
            (self.backoff_base > 0, "--backoff-base must be positive"),
            (self.backoff_cap >= self.backoff_base, "--backoff-cap must be at least --backoff-base"),
            (self.busy_timeout >= 0, "--busy-timeout must not be negative"),
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
            (self.grace >= 0, "--grace must not be negative"),
            (self.connect_timeout > 0 and self.total_timeout > 0, "timeouts must be positive"),
            (self.poll_interval > 0, "--poll-interval must be positive"),
            (self.wait_timeout > 0, "--wait-timeout must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress displays."""

    total: int
    by_status: dict[str, int]
    in_flight: int
    waiting: int
    awaiting_images: int
    api_calls: int
    elapsed: float
    rate: float
    #: what the run is doing: "starting", "listing" (with ``phase_detail`` such as
    #: "page 3, 2,000 images"), "running", "draining", "ended"
    phase: str = "running"
    phase_detail: str = ""


@dataclass
class RunOutcome:
    """How a run ended."""

    exit_code: int
    summary: dict[str, Any]
    out_dir: Path


@dataclass(slots=True)
class _JobState:
    job: Job
    reconcile: bool = False
    #: an earlier CreateImage of this job may have been applied (answer lost, or a resumed run)
    maybe_created: bool = False
    resumed_intent: bool = False
    intent_written: bool = False
    attempts: int = 0
    request_ids: list[str] = field(default_factory=list)
    started_at: float = 0.0
    first_busy_at: float | None = None
    busy_waits: int = 0
    throttled: int = 0
    failures: int = 0
    limiter_wait: float = 0.0


_CURRENT: contextvars.ContextVar[_JobState | None] = contextvars.ContextVar("imagebatch_job", default=None)


class Run:
    """A batch run over one job list into one run directory.

    Args:
        job_list: path of the job list.
        out_dir: the run directory.
        options: the run's knobs.
        credentials: API credentials.
        endpoint: API base URL.
        progress: called about once a second, and at the end, with a :class:`Progress`.
        handle_signals: stop gracefully on SIGINT/SIGTERM (main thread only).
    """

    def __init__(
        self,
        job_list: Path,
        out_dir: Path,
        options: RunOptions,
        *,
        credentials: Credentials,
        endpoint: str,
        progress: Callable[[Progress], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        options.check()
        self.job_list_path = job_list
        self.options = options
        self.directory = RunDirectory(out_dir)
        self.credentials = credentials
        self.endpoint = endpoint
        self.progress = progress
        self.handle_signals = handle_signals
        self.rng = random.Random(options.seed)  # noqa: S311 - jitter, not crypto
        self.calls: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.retries = 0
        self.fatal: ApiError | None = None
        self.list_problem: str | None = None
        self.stopped_by: str | None = None
        self.total_jobs = 0
        self._existing: dict[str, tuple[str, str]] = {}
        self._intents: dict[str, str] = {}
        self._done_ids: set[str] = set()
        self._listed_done = 0
        self.waiter: ImageWaiter[_JobState] = ImageWaiter(timeout=options.wait_timeout)
        self._t0 = time.monotonic()

    # ----- set-up ----------------------------------------------------------------------------

    def _prepare(self) -> tuple[JobList, dict[str, Any]]:
        """Lock the directory, validate the job list, check it against the journal."""
        directory = self.directory
        directory.lock()
        resuming = directory.exists
        if resuming and not self.options.resume:
            msg = (
                f"run directory {directory.path} already holds a run; pass --resume to continue it, "
                "or choose a new --out"
            )
            raise RunDirectoryError(msg)
        if resuming:
            header = directory.read_header()
            if self.options.name_template not in (DEFAULT_NAME_TEMPLATE, header["nameTemplate"]):
                msg = (
                    f"--name-template {self.options.name_template!r} differs from the run's "
                    f"{header['nameTemplate']!r}; a resumed run keeps its image names"
                )
                raise RunDirectoryError(msg)
        else:
            now = datetime.now(UTC)
            header = {
                "version": 1,
                "runId": f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
                "createdAt": now.isoformat(),
                "date": now.isoformat(),
                "jobList": str(self.job_list_path),
                "format": self.options.fmt,
                "nameTemplate": self.options.name_template,
                "endpoint": self.endpoint,
            }
        jobs = JobList(
            self.job_list_path,
            fmt=self.options.fmt or header.get("format"),
            name_template=header["nameTemplate"],
            date=datetime.fromisoformat(header["date"]),
            run_id=header["runId"],
        )
        checked = jobs.check()
        self.total_jobs = checked.jobs
        self._validation = checked
        if resuming:
            self._load_journal(jobs)
        else:
            directory.write_header(header)
        return jobs, header

    def _load_journal(self, jobs: JobList) -> None:
        state = read_journal(self.directory.file(JOURNAL_FILE))
        listed: set[str] = set()
        for job in jobs:
            listed.add(job.instance_id)
            finished = state.results.get(job.instance_id)
            for kind, before in (
                ("finished", finished["imageName"] if finished else None),
                ("started", state.intents.get(job.instance_id)),
            ):
                if before is not None and before != job.image_name:
                    msg = (
                        f"{jobs.path}:{job.line}: instance {job.instance_id} was {kind} in this run as image "
                        f"{before!r} but the job list now names {job.image_name!r}; resuming would be unsafe"
                    )
                    raise RunDirectoryError(msg)
        orphans = [i for i in state.intents if i not in state.results and i not in listed]
        if orphans:
            msg = (
                f"the job list no longer has instance(s) {', '.join(orphans[:5])} that this run may have "
                "already sent CreateImage for; restore them to the list to resume safely"
            )
            raise RunDirectoryError(msg)
        self._intents = state.intents
        self._done_ids = set(state.results)
        for instance_id, record in state.results.items():
            if instance_id not in listed:
                continue  # ended in this run, since removed from the list: kept, but not counted
            self._listed_done += 1
            self.by_status[record["status"]] += 1
            if record.get("error"):
                self.error_codes[record["error"]["code"]] += 1
        if state.torn:
            self.directory.compact_journal(state)
        self.directory.rebuild_results(state)

    # ----- API plumbing ----------------------------------------------------------------------

    async def _gate(self, _action: str) -> None:
        started = time.monotonic()
        await self.meter.acquire()
        st = _CURRENT.get()
        if st is not None:
            st.limiter_wait += time.monotonic() - started

    def _observe(self, record: RequestRecord) -> None:
        self.calls[record.action] += 1
        self.codes[record.code or "OK"] += 1
        st = _CURRENT.get()
        job: dict[str, Any] = {}
        if st is not None:
            st.attempts += 1
            if record.request_id:
                st.request_ids.append(record.request_id)
            job = {"instanceId": st.job.instance_id, "attempt": st.attempts, "limiterWaitSeconds": st.limiter_wait}
            st.limiter_wait = 0.0
        self.events.log.info(
            ATTEMPT,
            action=record.action,
            status=record.status,
            code=record.code,
            requestId=record.request_id,
            apiSeconds=record.elapsed,
            **job,
        )

    async def _list_existing(self, client: ZecClient) -> None:
        """One paginated listing of the account's images, kept only for this list's names."""
        wanted = self._validation
        attempt = 0
        while True:
            try:
                found: dict[str, tuple[str, str]] = {}
                async for image in client.describe_custom_images(page_size=1000):
                    name, status = image.get("imageName"), image.get("imageStatus")
                    if not isinstance(name, str) or status not in _LIVE_IMAGE_STATES:
                        continue
                    if wanted.may_contain_name(name):
                        found[name] = (str(image.get("imageId")), str(status))
                self._existing = found
                self.events.log.info(LISTING_DONE, matching=len(found))
                return
            except (FatalRunError, PermanentJobError):
                raise
            except ApiError as err:
                attempt += 1
                if attempt >= self.options.max_attempts:
                    raise FatalRunError(
                        err.code,
                        f"could not list existing images after {attempt} attempts: {err.message}",
                        status=err.status,
                        request_id=err.request_id,
                        action=err.action,
                    ) from err
                if isinstance(err, ThrottledError):
                    await anyio.sleep(self.meter.on_throttled(err.retry_after))  # Retry-After, if any
                await anyio.sleep(
                    full_jitter(attempt, base=self.options.backoff_base, cap=self.options.backoff_cap, rng=self.rng)
                )

    # ----- jobs ------------------------------------------------------------------------------

    def _source(self, jobs: JobList) -> Iterator[_JobState]:
        try:
            for job in jobs:
                if job.instance_id in self._done_ids:
                    continue
                sent = job.instance_id in self._intents
                yield _JobState(job, reconcile=sent, maybe_created=sent, resumed_intent=sent, intent_written=sent)
        except JobListError as exc:
            # The file was validated before the first call; a bad row now means it was changed
            # under the running job: stop starting jobs, finish the ones in flight, exit 3.
            self.list_problem = exc.problems[0]
            self.stopped_by = f"job list changed during the run: {self.list_problem}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.stop()

    async def _admit(self, batch: list[_JobState]) -> None:
        """Make the intents of a batch of new jobs durable with one fsync, before any is sent.

        A job recorded here but never sent (the run stopped first) costs one look-up by name on
        resume, nothing more.
        """
        fresh = [st for st in batch if not st.intent_written and st.job.image_name not in self._existing]
        if fresh:
            await self.writer.intent(*(st.job for st in fresh))
            for st in fresh:
                st.intent_written = True

    def _finish(
        self,
        st: _JobState,
        status: Status,
        *,
        image_id: str | None = None,
        image_status: str | None = None,
        error: ApiError | None = None,
        reason: str | None = None,
    ) -> None:
        now = time.time()
        result = JobResult(
            instance_id=st.job.instance_id,
            image_name=st.job.image_name,
            status=status,
            image_id=image_id,
            image_status=image_status,
            error=error.to_record() if error else None,
            reason=reason,
            attempts=st.attempts,
            request_ids=tuple(st.request_ids),
            started_at=st.started_at or now,
            ended_at=now,
            line=st.job.line,
        )
        self.writer.result(result)
        self.by_status[status.value] += 1
        if error is not None:
            self.error_codes[error.code] += 1
        if status is not Status.SUCCEEDED or st.attempts != 1:
            # The plain case (one call, success) is fully told by its api.attempt event and
            # its results.jsonl line; log the others, which people look for.
            self.events.log.info(
                JOB_ENDED,
                instanceId=st.job.instance_id,
                status=status.value,
                imageId=image_id,
                code=error.code if error else None,
                attempts=st.attempts,
                reason=reason,
            )

    async def _worker(self) -> None:
        while True:
            st = await self.dispatcher.take()
            if st is None:
                return
            token = _CURRENT.set(st)
            try:
                await self._process(st)
            finally:
                _CURRENT.reset(token)

    async def _process(self, st: _JobState) -> None:
        job = st.job
        if not st.started_at:
            st.started_at = time.time()
            existing = self._existing.get(job.image_name)
            if existing is not None:
                image_id, image_status = existing
                if st.resumed_intent:
                    reason = "adopted: created by an earlier, interrupted attempt of this run"
                    self._created(st, image_id, image_status, reason)
                else:
                    reason = f"an image named {job.image_name!r} already exists ({image_status})"
                    self._finish(st, Status.SKIPPED, image_id=image_id, image_status=image_status, reason=reason)
                    self.dispatcher.done()
                return
        try:
            if st.reconcile:
                found = await self._find_by_name(job.image_name)
                st.reconcile = False
                if found is not None:
                    reason = "adopted: an earlier attempt created it but its answer was lost"
                    self._created(st, found[0], found[1], reason)
                    return
            if not st.intent_written:
                await self.writer.intent(job)
                st.intent_written = True
            created: CreatedImage = await self.client.create_image(
                job.instance_id, job.image_name, resource_group_id=job.resource_group_id, tags=job.tags
            )
        except ApiError as err:
            self._on_error(st, err)
            return
        self._created(st, created.image_id, "CREATING")

    def _created(self, st: _JobState, image_id: str, image_status: str, reason: str | None = None) -> None:
        """The job has its image: done now, or (``--wait``) when the image is AVAILABLE."""
        if not self.options.wait or image_status == "AVAILABLE":
            self._finish(st, Status.SUCCEEDED, image_id=image_id, image_status=image_status, reason=reason)
            self.dispatcher.done()
        else:
            self.waiter.add(st, image_id, reason)  # stays in flight until the poller ends it

    async def _find_by_name(self, name: str) -> tuple[str, str] | None:
        async for image in self.client.describe_custom_images(image_name=name, page_size=100):
            if image.get("imageName") == name and image.get("imageStatus") != "DELETING":
                return str(image.get("imageId")), str(image.get("imageStatus"))
        return None

    async def _poll_images(self) -> None:
        """``--wait``: every poll interval, look up all awaited images and end the jobs whose
        image is AVAILABLE, FAILED, gone or out of time. Returns when the pool has nothing left."""
        while not self.dispatcher.finished:
            with anyio.move_on_after(self.options.poll_interval):
                while not self.dispatcher.finished:
                    await self.dispatcher.changed()
            if self.dispatcher.finished or not self.waiter:
                continue
            if self.fatal is not None:
                self._release_awaited(f"waiting stopped: {self.fatal.code}")
                continue
            try:
                ended = await self.waiter.poll(self.client)
            except FatalRunError as fatal:
                self._stop_fatal(fatal)
                continue
            except ApiError:
                continue  # the next poll tries again
            for r in ended:
                st = r.item
                if r.outcome == "available":
                    self._finish(st, Status.SUCCEEDED, image_id=r.image_id, image_status=r.image_status, reason=r.note)
                else:
                    code, text = {
                        "failed": ("IMAGE_FAILED", f"image {r.image_id} ended {r.image_status}"),
                        "missing": ("IMAGE_NOT_FOUND", f"image {r.image_id} disappeared while CREATING"),
                        "timeout": (
                            "WAIT_TIMEOUT",
                            f"image {r.image_id} still {r.image_status} after {self.options.wait_timeout:g} s",
                        ),
                    }[r.outcome]
                    failure = PermanentJobError(code, text, action="DescribeCustomImages")
                    self._finish(st, Status.FAILED, image_id=r.image_id, image_status=r.image_status, error=failure)
                self.dispatcher.done()

    def _release_awaited(self, why: str) -> None:
        """End awaited jobs without knowing how their images end (the run is stopping)."""
        for st, image_id, note in self.waiter.drain():
            reason = f"image created, not confirmed AVAILABLE ({why})" + (f"; {note}" if note else "")
            self._finish(st, Status.SUCCEEDED, image_id=image_id, image_status="CREATING", reason=reason)
            self.dispatcher.done()

    def _on_error(self, st: _JobState, err: ApiError) -> None:
        opts = self.options
        now = time.monotonic()
        if err.request_id and err.request_id not in st.request_ids:
            st.request_ids.append(err.request_id)
        if isinstance(err, FatalRunError):
            self._finish(st, Status.FAILED, error=err, reason="fatal for the run: stopping")
            self.dispatcher.done()
            self._stop_fatal(err)
            return
        if isinstance(err, PermanentJobError):
            self._finish(st, Status.FAILED, error=err)
            self.dispatcher.done()
            return
        if isinstance(err, InstanceBusyError):
            if st.maybe_created:
                # Busy may mean IMAGING for our own image whose answer was lost and which the
                # look-up did not list yet: look again before the next CreateImage.
                st.reconcile = True
            st.first_busy_at = st.first_busy_at or now
            if now - st.first_busy_at >= opts.busy_timeout:
                self._finish(st, Status.FAILED, error=err, reason=f"instance still busy after {opts.busy_timeout:g} s")
                self.dispatcher.done()
                return
            delay = full_jitter(st.busy_waits, base=opts.backoff_base, cap=opts.backoff_cap, rng=self.rng)
            delay = min(delay, max(0.0, st.first_busy_at + opts.busy_timeout - now))
            st.busy_waits += 1
        elif isinstance(err, ThrottledError):
            wait = self.meter.on_throttled(err.retry_after)
            st.throttled += 1
            delay = full_jitter(min(st.throttled, 4), base=opts.backoff_base / 4, cap=opts.backoff_cap, rng=self.rng)
            delay = max(delay, wait)  # never before the server's Retry-After
        else:
            if err.may_have_committed:
                st.reconcile = st.maybe_created = True
            st.failures += 1
            if st.failures >= opts.max_attempts:
                self._finish(st, Status.FAILED, error=err, reason=f"gave up after {st.failures} failed attempts")
                self.dispatcher.done()
                return
            delay = full_jitter(st.failures - 1, base=opts.backoff_base, cap=opts.backoff_cap, rng=self.rng)
        self.retries += 1
        self.events.log.info(
            RETRY_SCHEDULED,
            instanceId=st.job.instance_id,
            code=err.code,
            backoffSeconds=round(delay, 3),
            reconcile=st.reconcile,
        )
        self.dispatcher.retry_at(st, now + delay)

    def _stop_fatal(self, err: ApiError) -> None:
        """No job can succeed any more: stop handing out jobs (the first fatal error wins)."""
        if self.fatal is None:
            self.fatal = err
            self.stopped_by = f"fatal:{err.code}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.stop()

    def _skip_rest(self, reason: str) -> None:
        """After a fatal error: every job not yet ended is recorded as skipped."""
        for st in [*self.dispatcher.drain_waiting(), *self.dispatcher.drain_source()]:
            note = reason
            if st.reconcile or st.resumed_intent:
                note += "; an earlier attempt's answer was lost, so its image may exist"
            self._finish(st, Status.SKIPPED, reason=note)

    # ----- the run ---------------------------------------------------------------------------

    def _snapshot(self) -> Progress:
        elapsed = time.monotonic() - self._t0
        calls = sum(self.calls.values())
        return Progress(
            total=self.total_jobs,
            by_status=dict(self.by_status),
            in_flight=self.dispatcher.in_flight if hasattr(self, "dispatcher") else 0,
            waiting=self.dispatcher.waiting if hasattr(self, "dispatcher") else 0,
            awaiting_images=len(self.waiter),
            api_calls=calls,
            elapsed=elapsed,
            rate=self.meter.throttle.rate if hasattr(self, "meter") else 0.0,
        )

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self.events.flush()
            if self.progress is not None:
                self.progress(self._snapshot())

    async def _watch_signals(self, work: anyio.CancelScope, everything: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.stopped_by is None or self.stopped_by.startswith("fatal"):
                    self.stopped_by = signal.Signals(signum).name
                    self.events.log.warning(RUN_STOPPING, reason=self.stopped_by, graceSeconds=self.options.grace)
                    self.dispatcher.stop()
                    work.deadline = min(work.deadline, anyio.current_time() + self.options.grace)
                else:
                    everything.cancel()
                    return

    def _exit_code(self) -> int:
        if self.stopped_by == "SIGINT":
            return EXIT_SIGINT
        if self.stopped_by == "SIGTERM":
            return EXIT_SIGTERM
        if self.fatal is not None or self.list_problem is not None:
            return EXIT_FATAL
        return EXIT_FAILED if self.by_status.get(Status.FAILED.value) else EXIT_OK

    def _summary(self, header: dict[str, Any], started: float, exit_code: int) -> dict[str, Any]:
        ended = sum(self.by_status.values())
        return {
            "runId": header["runId"],
            "jobList": str(self.job_list_path),
            "startedAt": datetime.fromtimestamp(started, UTC).isoformat(),
            "endedAt": datetime.now(UTC).isoformat(),
            "wallSeconds": round(time.monotonic() - self._t0, 3),
            "jobs": self.total_jobs,
            "ended": ended,
            "pending": self.total_jobs - ended,
            "finished": ended >= self.total_jobs,
            "byStatus": {s.value: self.by_status.get(s.value, 0) for s in Status},
            "byErrorCode": dict(sorted(self.error_codes.items())),
            "apiCalls": {"total": sum(self.calls.values()), "byAction": dict(self.calls), "byCode": dict(self.codes)},
            "retries": self.retries,
            "throttleDecreases": self.meter.throttle.decreases if hasattr(self, "meter") else 0,
            "stoppedBy": self.stopped_by,
            "exitCode": exit_code,
        }

    async def execute(self) -> RunOutcome:
        """Run to the end (or to a stop) and return the outcome. The lock is released after."""
        try:
            return await self._execute()
        finally:
            events = getattr(self, "events", None)
            if events is not None:
                events.close()
            self.directory.unlock()

    async def _execute(self) -> RunOutcome:
        started = time.time()
        jobs, header = self._prepare()
        summary_path = self.directory.file(SUMMARY_FILE)
        if self.options.resume and self._listed_done and self._listed_done >= self.total_jobs:
            # A finished run: nothing to do, same answer as before.
            try:
                previous = json.loads(summary_path.read_text("utf-8"))
                code = int(previous["exitCode"])
            except (OSError, ValueError, KeyError, TypeError):
                previous, code = {}, (EXIT_FAILED if self.by_status.get("failed") else EXIT_OK)
            return RunOutcome(code, previous, self.directory.path)
        self.events = EventLog(self.directory.file(EVENTS_FILE).open("a", encoding="utf-8"))
        self.events.log.info(
            RUN_STARTED, runId=header["runId"], jobs=self.total_jobs, resumed=bool(self._done_ids or self._intents)
        )
        self.meter = RateMeter(self.options.rate)
        self.writer = JournalWriter(self.directory)
        # Intents are made durable a batch at a time: a bigger batch means fewer pauses for
        # fsync, a smaller one fewer look-ups on resume for jobs recorded but never sent. Half a
        # second of requests (at least two per worker, at most 256) keeps both small.
        admit_batch = int(min(256, max(2 * self.options.concurrency, self.options.rate / 2)))
        self.dispatcher: Dispatcher[_JobState] = Dispatcher(self._source(jobs), admit=self._admit, batch=admit_batch)
        client = ZecClient(
            self.endpoint,
            self.credentials,
            pool_size=self.options.concurrency,
            connect_timeout=self.options.connect_timeout,
            total_timeout=self.options.total_timeout,
            gate=self._gate,
            observer=self._observe,
        )
        try:
            async with client, anyio.create_task_group() as outer:
                self.client = client
                outer.start_soon(self.writer.run)
                work = anyio.CancelScope()
                if self.handle_signals:
                    outer.start_soon(self._watch_signals, work, outer.cancel_scope)
                outer.start_soon(self._tick)
                with work:
                    try:
                        await self._list_existing(client)
                    except ApiError as err:
                        self.fatal = err
                        self.stopped_by = f"fatal:{err.code}"
                        self.dispatcher.stop()
                    else:
                        async with anyio.create_task_group() as pool:
                            for _ in range(self.options.concurrency):
                                pool.start_soon(self._worker)
                            if self.options.wait:
                                pool.start_soon(self._poll_images)
                if self.fatal is not None and self.stopped_by and self.stopped_by.startswith("fatal"):
                    self._skip_rest(f"run stopped: {self.fatal.code}: {self.fatal.message}")
                with anyio.CancelScope(shield=True):
                    await self.writer.close()
                outer.cancel_scope.cancel()
        finally:
            # After a hard stop: write what is queued (an OSError here must not hide the first one).
            with contextlib.suppress(OSError):
                self.writer.close_now()
        exit_code = self._exit_code()
        summary = self._summary(header, started, exit_code)
        write_atomic(summary_path, json.dumps(summary, indent=2).encode() + b"\n")
        self.events.log.info(RUN_ENDED, exitCode=exit_code, stoppedBy=self.stopped_by)
        self.events.close()
        if self.progress is not None:
            self.progress(self._snapshot())
        return RunOutcome(exit_code, summary, self.directory.path)
