"""One batch run: job list -> journal -> worker pool -> results, summary and exit code.

The worker pool turns every failure into a result or a retry; nothing escapes the task group
(where it would cancel the other workers). Run-wide stops (a fatal API error, a signal) go
through the dispatcher, which stops handing out jobs while requests in flight finish.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import random
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .client import CreatedImage, RequestRecord, ZecClient
from .clock import SYSTEM_CLOCK, Clock
from .credentials import DEFAULT_ENDPOINT, Credentials, parse_endpoint
from .errors import (
    ApiError,
    FatalRunError,
    InstanceBusyError,
    JobListError,
    PermanentJobError,
    ThrottledError,
)
from .events import ATTEMPT, JOB_ENDED, LISTING_DONE, RETRY_SCHEDULED, RUN_ENDED, RUN_STARTED, RUN_STOPPING, EventLog
from .header import RunHeader
from .journal import EVENTS_FILE, SUMMARY_FILE, JournalWriter, RunDirectory, write_atomic
from .lifecycle import Lifecycle, PowerFacts
from .models import Job, JobResult, Status
from .options import RunOptions, parse_max_stopped
from .policy import (
    OUTCOME_UNKNOWN,
    Attempts,
    Call,
    Retry,
    RetryOptions,
    StopRun,
    Verdict,
    counts_as_failure,
    decide,
    lookup_failed,
    lookup_timeout,
    lookups_possible_after,
    needs_look_up,
    unknown_message,
)
from .power import DownCap, PowerLedger, restore_power
from .resume import prepare
from .scheduling import Dispatcher, RateMeter, full_jitter
from .snapshot import JobSource
from .sources import JobList
from .summary import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    build_summary,
    exit_code_for,
    segment_record,
)
from .waiting import FAILED_IMAGE_STATES, ImageWaiter

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_FATAL",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "Progress",
    "Run",
    "RunOptions",
    "RunOutcome",
]

#: Image states that mean "an image by this name is there (or on its way)".
_LIVE_IMAGE_STATES = frozenset({"AVAILABLE", "CREATING", "SYNCING", "PROCESSING"})
_ADOPTED_LOST = "adopted: an earlier attempt created it but its answer was lost"
_ADOPTED_RESUMED = "adopted: created by an earlier, interrupted attempt of this run"


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
    #: HTTP requests being sent or answered right now (``in_flight`` counts jobs, including
    #: those whose image is awaited)
    requests_in_flight: int = 0
    #: ``--stop-running``: instances down now (stopped by this run, not yet RUNNING), jobs
    #: waiting for a slot, and jobs in the lifecycle's stop, wait and start steps
    power: dict[str, int] = field(default_factory=dict)
    #: API requests by (action, code or "OK"), retries and 429 answers so far (for --metrics-file)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    retries: int = 0
    throttled: int = 0


@dataclass
class RunOutcome:
    """How a run ended."""

    exit_code: int
    summary: dict[str, Any]
    out_dir: Path


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a job ends unless the look-up by name before its end finds its image."""

    status: Status
    error: ApiError | None
    reason: str | None


@dataclass(slots=True)
class _JobState:
    job: Job
    #: look the image up by name before the next CreateImage (one may have been applied since
    #: the last look-up that answered)
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
    #: failed look-ups by name since the last one that answered (throttled ones aside)
    lookup_failures: int = 0
    lookup_throttled: int = 0
    #: set when the job would end without an image although one may exist: the next step is a
    #: look-up by name, and this is how the job ends if it finds nothing
    confirm: _Ending | None = None
    #: monotonic time before which no look-up by name is sent (``--lookup-delay`` after a
    #: CreateImage whose answer was lost: the API may list the new image late)
    look_after: float = 0.0
    #: ``--stop-running``: what the run does to the job's instance (None: a plain run)
    power: PowerFacts | None = None


#: Makes a run's API client; called like :class:`ZecClient` (endpoint, credentials, keywords).
ClientFactory = Callable[..., ZecClient]

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
        explicit: names of the options given on the command line (default: those that differ
            from their defaults).
        notice: called with each line worth telling the user on stderr.
        clock: the monotonic and wall clocks (tests pass fake ones instead of sleeping).
        client_factory: makes the run's API client, called like :class:`ZecClient` (tests may
            wrap it).
    """

    def __init__(
        self,
        job_list: Path | JobSource | None,
        out_dir: Path,
        options: RunOptions,
        *,
        credentials: Credentials,
        endpoint: str | None,
        progress: Callable[[Progress], None] | None = None,
        handle_signals: bool = False,
        explicit: Collection[str] | None = None,
        notice: Callable[[str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        client_factory: ClientFactory = ZecClient,
    ) -> None:
        options.check(combined=not options.resume)
        if isinstance(job_list, Path):
            job_list = JobSource(str(job_list), path=job_list)
        self.source = job_list
        self.clock = clock
        self.client_factory = client_factory
        self.options = options
        #: options given on the command line (a resume takes the others from run.json)
        self.explicit = frozenset(explicit) if explicit is not None else options.non_default()
        self.directory = RunDirectory(out_dir)
        self.credentials = credentials
        self.endpoint = endpoint
        self.progress = progress
        self.notice = notice or (lambda _text: None)
        self.handle_signals = handle_signals
        self.rng = random.Random(options.seed)  # noqa: S311 - jitter, not crypto
        self.retry = RetryOptions.of(options)
        self.calls: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.throttled = 0
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
        self._segments: list[dict[str, Any]] = []
        self._segment_id = uuid.uuid4().hex[:12]
        self._started = clock.wall()
        self.waiter: ImageWaiter[_JobState] = ImageWaiter(timeout=options.wait_timeout, clock=clock.monotonic)
        self._t0 = clock.monotonic()
        # What progress shows: the phase, the listing's pages and images, requests on the wire.
        self._phase = "starting"
        self._listing_pages = 0
        self._listing_images = 0
        self._requests_in_flight = 0
        #: the starting listing answered (``_existing`` is a look-up of every name)
        self._listed = False
        #: jobs to end after a fatal error, shared by the workers (see _settle_stopped)
        self._settling: deque[_JobState] = deque()
        #: whether look-ups by name can still be sent (off after a look-up failed fatally)
        self._lookups_off = False
        self._resume_look_after = 0.0
        #: requests in a row that got no usable answer (see _watch_outage)
        self._unanswered = 0
        #: this process's exit code, once its work is over (for the journal's last checkpoint)
        self._final_exit: int | None = None
        #: the instances this run stopped (in every process) and has not seen RUNNING again
        self._ledger = PowerLedger(record_started=self._record_started, clock=clock.wall)
        self._cap: DownCap | None = None
        self._life: Lifecycle | None = None
        #: instances the run's final restore could not start (exit code 5)
        self._left_stopped: list[str] = []
        #: jobs ended while the run stopped, whose instance it stopped: written after the restore
        self._after_restore: list[tuple[_JobState, Status, dict[str, Any]]] = []
        #: ``--stop-running`` on resume: earlier processes' power facts, by instance
        self._power_history: dict[str, dict[str, Any]] = {}

    # ----- set-up ----------------------------------------------------------------------------

    def _prepare(self) -> tuple[JobList, RunHeader]:
        """Lock the directory, start or resume the run, validate its job list."""
        prepared = prepare(
            self.directory,
            self.source,
            self.options,
            explicit=self.explicit,
            endpoint=self.endpoint or DEFAULT_ENDPOINT,
            notice=self.notice,
        )
        # No endpoint given (flag or ZENLAYER_ENDPOINT): a resumed run talks to the API it started with.
        self.endpoint = self.endpoint or prepared.header.endpoint or DEFAULT_ENDPOINT
        parse_endpoint(self.endpoint)
        self.options = prepared.options
        self.rng = random.Random(self.options.seed)  # noqa: S311 - jitter, not crypto
        self.retry = RetryOptions.of(self.options)
        self.waiter = ImageWaiter(timeout=self.options.wait_timeout, clock=self.clock.monotonic)
        self.total_jobs = prepared.validation.jobs
        self._validation = prepared.validation
        for warning in prepared.validation.warnings:
            self.notice(f"warning: {warning}")
        self._intents = prepared.intents
        self._done_ids = prepared.done_ids
        self._listed_done = len(prepared.done_ids)
        self.by_status.update(prepared.by_status)
        self.error_codes.update(prepared.error_codes)
        self._segments = prepared.segments
        self.resumed = prepared.resumed
        # When each owed instance went down, as the earlier processes' checkpoints say (0.0:
        # unknown, no downtime is counted for it).
        down_since: dict[str, float] = {}
        for segment in self._segments:
            down_since.update((segment.get("power") or {}).get("downSince") or {})
        for instance_id in prepared.owed_starts:
            self._ledger.stopped[instance_id] = float(down_since.get(instance_id, 0.0))
        self._power_history = prepared.power_history
        if self.options.stop_running:
            limit = parse_max_stopped(self.options.max_stopped, self.total_jobs)
            self._cap = DownCap(limit, self.options.max_stopped_per_group)
        # A job the last process may have sent CreateImage for is looked up no sooner than
        # --lookup-delay after this process started: that process may have sent it at any moment
        # after its last checkpoint, up to its death, which was before this start.
        self._resume_look_after = self.clock.monotonic() + self.options.lookup_delay
        return prepared.jobs, prepared.header

    # ----- API plumbing ----------------------------------------------------------------------

    async def _gate(self, _action: str) -> None:
        # Real seconds: the rate limiter waits on the real clock, whatever the run's clock says.
        started = time.monotonic()
        await self.meter.acquire()
        # Counted down in _observe, which the client calls once for every request it sends.
        self._requests_in_flight += 1
        st = _CURRENT.get()
        if st is not None:
            st.limiter_wait += time.monotonic() - started

    def _observe(self, record: RequestRecord) -> None:
        self._requests_in_flight -= 1
        self._watch_outage(record)
        if self._phase == "listing":
            self._listing_pages += 1
        self.calls[record.action] += 1
        self.codes[record.code or "OK"] += 1
        self.requests[(record.action, record.code or "OK")] += 1
        self.throttled += record.status == 429
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

    def _watch_outage(self, record: RequestRecord) -> None:
        """Many requests in a row without a usable answer (no connection, 5xx) mean the API, or
        the way to it, is down: stop the run (exit 3, jobs ``interrupted`` for --resume) rather
        than fail every job for good one by one."""
        if record.status is not None and record.status < 500:
            self._unanswered = 0
            return
        self._unanswered += 1
        limit = max(24, 3 * self.options.concurrency)
        if self._unanswered >= limit and self.fatal is None and getattr(self, "dispatcher", None) is not None:
            self._stop_fatal(
                FatalRunError(
                    "API_UNREACHABLE",
                    f"{self._unanswered} requests in a row got no usable answer (the last: {record.code or 'none'}, "
                    f"HTTP {record.status if record.status is not None else 'none'}); the API or the way to it "
                    "is down",
                    status=record.status,
                    request_id=record.request_id,
                    action=record.action,
                )
            )

    async def _list_existing(self, client: ZecClient) -> None:
        """One paginated listing of the account's images, kept only for this list's names."""
        wanted = self._validation
        attempt = 0
        self._phase = "listing"
        while True:
            self._listing_pages = self._listing_images = 0
            try:
                found: dict[str, tuple[str, str]] = {}
                # A read: each failed try gives the next one longer to answer, as look-ups do.
                timeout = lookup_timeout(self.options.total_timeout, attempt)
                async for image in client.describe_custom_images(page_size=1000, request_timeout=timeout):
                    self._listing_images += 1
                    name, status = image.get("imageName"), image.get("imageStatus")
                    if not isinstance(name, str) or status not in _LIVE_IMAGE_STATES:
                        continue
                    if wanted.may_contain_name(name):
                        found[name] = (str(image.get("imageId")), str(status))
                self._existing = found
                self._listed = True
                self._phase = "running"
                self.events.log.info(
                    LISTING_DONE, matching=len(found), pages=self._listing_pages, images=self._listing_images
                )
                return
            except ApiError as err:
                attempt += 1
                wait = self.meter.on_throttled(err.retry_after) if isinstance(err, ThrottledError) else 0.0
                # A read: its own budget, not --max-attempts.
                attempts = Attempts(failures=attempt, server_wait=wait, jitter=self.rng.random())
                verdict = decide(err, attempts, self.retry, call=Call.LISTING)
                if isinstance(err, (FatalRunError, PermanentJobError)):
                    raise
                self.retries += 1
                if not isinstance(verdict, Retry):
                    raise FatalRunError(
                        err.code,
                        f"could not list existing images after {attempt} attempt{'s' * (attempt != 1)}: {err.message}",
                        status=err.status,
                        request_id=err.request_id,
                        action=err.action,
                    ) from err
                await anyio.sleep(verdict.delay)  # Retry-After, if any, then the back-off

    # ----- jobs ------------------------------------------------------------------------------

    def _source(self, jobs: JobList) -> Iterator[_JobState]:
        try:
            for read, job in enumerate(jobs, start=1):
                if read > self.total_jobs:
                    # More rows than were validated: the run's copy grew under the running job.
                    raise JobListError([f"{jobs.display}:{job.line}: a row the run did not validate (the copy grew)"])
                if job.instance_id in self._done_ids:
                    continue
                sent = job.instance_id in self._intents
                power = PowerFacts() if self._cap is not None else None
                before = self._power_history.get(job.instance_id)
                if power is not None and before is not None:
                    # What earlier processes did to the instance stays in the job's record.
                    power.state_at_start = before.get("stateAtStart")
                    power.actions = [str(a) for a in before.get("actions") or []]
                    power.forced = bool(before.get("forced"))
                yield _JobState(
                    job,
                    reconcile=sent,
                    maybe_created=sent,
                    resumed_intent=sent,
                    intent_written=sent,
                    look_after=self._resume_look_after if sent else 0.0,
                    power=power,
                )
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
        life = self._life
        if life is not None and life.should_restart(st):
            kwargs = {"image_id": image_id, "image_status": image_status, "error": error, "reason": reason}
            if self.dispatcher.stopped:
                # The run is stopping: its final restore starts the instance; the result is
                # written after it, saying whether that worked.
                self._after_restore.append((st, status, kwargs))
                return
            # The instance this run stopped comes first: start it, then end the job as planned.
            life.divert_to_start(st, status, kwargs)
            self.dispatcher.push(st)
            return
        now = self.clock.wall()
        if life is not None:
            life.ended(st)
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
            power=st.power.record() if st.power is not None else None,
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
        while (st := await self.dispatcher.take()) is not None:
            token = _CURRENT.set(st)
            try:
                await self._process(st)
            finally:
                _CURRENT.reset(token)
        if self.fatal is not None:
            await self._settle_stopped()

    async def _process(self, st: _JobState) -> None:
        job = st.job
        if not st.started_at:
            st.started_at = self.clock.wall()
            existing = self._existing.get(job.image_name)
            if existing is not None:
                image_id, image_status = existing
                if st.resumed_intent:
                    self._carry_restore(st)
                    self._created(st, image_id, image_status, _ADOPTED_RESUMED)
                else:
                    reason = f"an image named {job.image_name!r} already exists ({image_status})"
                    self._finish(st, Status.SKIPPED, image_id=image_id, image_status=image_status, reason=reason)
                    self.dispatcher.done()
                return
        if st.power is not None and self._life is not None:
            if st.power.step is None:
                self._life.begin(st)  # parked until its state is known
                return
            if st.power.step in {"stop", "force", "start"}:
                if self.dispatcher.stopped and st.power.step != "start":
                    self.dispatcher.retry_at(st, self.clock.monotonic())  # stopping: stop nothing more
                    return
                await self._life.step(st)
                return
        if st.reconcile or st.confirm is not None:
            if self.clock.monotonic() < st.look_after and not self.dispatcher.stopped:
                self.dispatcher.retry_at(st, st.look_after)  # too soon: a new image may not be listed yet
                return
            try:
                found = await self._look_up(st)
            except ApiError as err:
                self._on_lookup_error(st, err)
                return
            if found is not None:
                st.confirm = None
                self._created(st, found[0], found[1], _ADOPTED_LOST)
                return
            if st.confirm is not None:
                self._end_not_found(st, st.confirm)
                self.dispatcher.done()
                return
        if self.dispatcher.stopped:
            # The run is stopping: send nothing new. Given back, the job is settled by a worker
            # (after a fatal error) or left to --resume (after a signal or a changed job list).
            self.dispatcher.retry_at(st, self.clock.monotonic())
            return
        try:
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

    def _carry_restore(self, st: _JobState) -> None:
        """A job adopted on resume: what this process's first restore did to its instance (an
        earlier process stopped it) goes into its record; one still down is the job's to start."""
        power, iid = st.power, st.job.instance_id
        if power is None or iid not in self._ledger.stopped:
            return
        if iid in self._ledger.running_again:
            power.started = True
            if power.actions[-1:] != ["started"]:
                power.actions.append("started")
            power.downtime = self._ledger.downtime.get(iid)
        else:
            power.stopped_by_us = True  # not RUNNING again yet: started before the job ends

    def _created(self, st: _JobState, image_id: str, image_status: str, reason: str | None = None) -> None:
        """The job has its image: done now, or (``--wait``) when the image is AVAILABLE."""
        if image_status in FAILED_IMAGE_STATES:
            # A look-up found the image an earlier attempt made, and it failed: so did the job,
            # as it would have with --wait.
            failure = PermanentJobError(
                "IMAGE_FAILED", f"image {image_id} ended {image_status}", action="DescribeCustomImages"
            )
            st.confirm = None
            self._finish(st, Status.FAILED, image_id=image_id, image_status=image_status, error=failure, reason=reason)
            self.dispatcher.done()
            return
        if self._life is not None and self._life.on_created(st, image_id, image_status, reason):
            return  # its instance is started again once the image is done (stays in flight)
        if not self.options.wait or image_status == "AVAILABLE":
            self._finish(st, Status.SUCCEEDED, image_id=image_id, image_status=image_status, reason=reason)
            self.dispatcher.done()
        else:
            self.waiter.add(st, image_id, reason)  # stays in flight until the poller ends it

    async def _find_by_name(self, name: str, *, request_timeout: float | None = None) -> tuple[str, str] | None:
        async for image in self.client.describe_custom_images(
            image_name=name, page_size=100, request_timeout=request_timeout
        ):
            if image.get("imageName") == name and image.get("imageStatus") != "DELETING":
                return str(image.get("imageId")), str(image.get("imageStatus"))
        return None

    async def _look_up(self, st: _JobState) -> tuple[str, str] | None:
        """Look the job's image up by name; each failed look-up gives the next one longer to answer."""
        timeout = lookup_timeout(self.options.total_timeout, st.lookup_failures)
        found = await self._find_by_name(st.job.image_name, request_timeout=timeout)
        st.reconcile, st.lookup_failures, st.lookup_throttled = False, 0, 0
        return found

    def _lookup_failed(self, st: _JobState, err: ApiError) -> Verdict:
        """Count a failed look-up; return what comes next (a retry carries its back-off)."""
        if err.request_id and err.request_id not in st.request_ids:
            st.request_ids.append(err.request_id)
        if isinstance(err, ThrottledError):
            st.lookup_throttled += 1
            st.throttled += 1
            self.meter.throttle.on_throttled()
        else:
            st.lookup_failures += 1
        attempts = Attempts(
            failures=st.lookup_failures,
            throttled=st.lookup_throttled,
            server_wait=err.retry_after or 0.0,
            jitter=self.rng.random(),
        )
        verdict = decide(err, attempts, self.retry, call=Call.LOOKUP)
        if isinstance(verdict, StopRun):
            self._lookups_off = True
        elif isinstance(verdict, Retry):
            self.events.log.info(
                RETRY_SCHEDULED,
                instanceId=st.job.instance_id,
                code=err.code,
                backoffSeconds=round(verdict.delay, 3),
                step="look-up",
            )
        return verdict

    def _on_lookup_error(self, st: _JobState, err: ApiError) -> None:
        """A look-up by name failed: look again later, or end the job ``unknown``."""
        verdict = self._lookup_failed(st, err)
        if isinstance(verdict, Retry):
            self.dispatcher.retry_at(st, self.clock.monotonic() + verdict.delay)
            return
        if isinstance(verdict, StopRun):
            self._stop_fatal(err)
        self._end_unknown(st, lookup_failed(err, st.lookup_failures))
        self.dispatcher.done()

    def _end_unknown(self, st: _JobState, why: str) -> None:
        """End a job ``unknown``: its CreateImage may have been applied and no look-up could tell."""
        error = ApiError(OUTCOME_UNKNOWN, unknown_message(st.job.image_name, why), action="DescribeCustomImages")
        self._finish(st, Status.UNKNOWN, error=error, reason="the image may exist; --resume looks it up again")

    def _end_not_found(self, st: _JobState, ending: _Ending) -> None:
        """End a job as planned, now that a look-up by name found no image of it."""
        st.confirm = None
        note = f"a look-up by name found no image {st.job.image_name!r}"
        reason = f"{ending.reason}; {note}" if ending.reason else note
        self._finish(st, ending.status, error=ending.error, reason=reason)

    def _pool_idle(self) -> bool:
        """No job is left to run or await (finished, or stopped with nothing in flight)."""
        return self.dispatcher.finished or (self.dispatcher.stopped and self.dispatcher.in_flight == 0)

    async def _poll_images(self) -> None:
        """``--wait``: every poll interval, look up all awaited images and end the jobs whose
        image is AVAILABLE, FAILED, gone or out of time. Returns when the pool has nothing left."""
        while not self._pool_idle():
            with anyio.move_on_after(self.options.poll_interval):
                while not self._pool_idle():
                    await self.dispatcher.changed()
            if self._pool_idle() or not self.waiter:
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
            # Not final: --resume looks the image up by name and waits for it again.
            reason = f"image created, not yet seen AVAILABLE ({why}); --resume waits for it" + (
                f"; {note}" if note else ""
            )
            self._finish(st, Status.INTERRUPTED, image_id=image_id, image_status="CREATING", reason=reason)
            self.dispatcher.done()

    def _on_error(self, st: _JobState, err: ApiError) -> None:
        """CreateImage failed: retry later, or end the job (the run too, on a fatal error)."""
        opts = self.options
        now = self.clock.monotonic()
        if err.request_id and err.request_id not in st.request_ids:
            st.request_ids.append(err.request_id)
        if err.may_have_committed:
            st.reconcile = st.maybe_created = True
            st.look_after = now + opts.lookup_delay
        if counts_as_failure(err):
            st.failures += 1
        busy_seconds = 0.0
        if isinstance(err, InstanceBusyError):
            if st.maybe_created:
                # Busy may mean IMAGING for our own image whose answer was lost and which the
                # look-up did not list yet: look again before the next CreateImage.
                st.reconcile = True
            st.first_busy_at = st.first_busy_at or now
            busy_seconds = now - st.first_busy_at
        wait = 0.0
        if isinstance(err, ThrottledError):
            wait = self.meter.on_throttled(err.retry_after)
            st.throttled += 1
        attempts = Attempts(
            failures=st.failures,
            throttled=st.throttled,
            busy_seconds=busy_seconds,
            busy_waits=st.busy_waits,
            server_wait=wait,
            jitter=self.rng.random(),
        )
        verdict = decide(err, attempts, self.retry, call=Call.CREATE)
        if isinstance(verdict, StopRun):
            self._stop_fatal(err)
        if not isinstance(verdict, Retry):
            self._end(st, verdict.status, error=err, reason=verdict.reason)
            return
        if isinstance(err, InstanceBusyError):
            st.busy_waits += 1
        delay = verdict.delay
        self.retries += 1
        self.events.log.info(
            RETRY_SCHEDULED,
            instanceId=st.job.instance_id,
            code=err.code,
            backoffSeconds=round(delay, 3),
            reconcile=st.reconcile,
        )
        self.dispatcher.retry_at(st, now + delay)

    def _end(self, st: _JobState, status: Status, *, error: ApiError | None = None, reason: str | None = None) -> None:
        """End a job in flight, after a look-up by name if its CreateImage may have been applied."""
        if needs_look_up(status, maybe_created=st.maybe_created):
            st.confirm = _Ending(status, error, reason)
            # A short back-off first: an image created a moment ago may not be listed yet.
            delay = full_jitter(0, base=self.options.backoff_base, cap=self.options.backoff_cap, rng=self.rng)
            delay = max(delay, st.look_after - self.clock.monotonic())
            self.events.log.info(
                RETRY_SCHEDULED,
                instanceId=st.job.instance_id,
                code=error.code if error else None,
                backoffSeconds=round(delay, 3),
                step="look-up before ending",
            )
            self.dispatcher.retry_at(st, self.clock.monotonic() + delay)
            return
        self._finish(st, status, error=error, reason=reason)
        self.dispatcher.done()

    # ----- what the lifecycle asks of the run (batch.lifecycle.Host) ---------------------------

    def resume_job(self, st: _JobState, delay: float = 0.0) -> None:
        """Hand a parked job back to a worker."""
        self.dispatcher.retry_at(st, self.clock.monotonic() + delay)

    def end_job(self, st: _JobState, status: Status, **kwargs: Any) -> None:
        """End a parked job (or, if its instance is stopped by this run, send it to its start)."""
        self._finish(st, status, **kwargs)
        self.dispatcher.done()

    def stop_run(self, err: ApiError) -> None:
        """Stop the run on a fatal error met by a lifecycle call."""
        self._stop_fatal(err)

    def _record_started(self, instance_id: str) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.started(instance_id)

    async def _restore(self, deadline: float) -> list[str]:
        """Start the instances of the ledger that are not RUNNING (see batch.power)."""
        interval = min(self.options.poll_interval, 5.0)
        self._phase = "restoring power"
        left = await restore_power(self.client, self._ledger, deadline=deadline, interval=interval)
        self._phase = "running"
        return left

    def _write_after_restore(self) -> None:
        """Write the results kept for after the final restore, with the power facts it settled."""
        pending, self._after_restore = self._after_restore, []
        for st, status, kwargs in pending:
            facts = st.power
            assert facts is not None
            instance_id = st.job.instance_id
            if instance_id in self._ledger.running_again:
                facts.started = True
                facts.actions.append("started")
                facts.downtime = self._ledger.downtime.get(instance_id)
            else:
                facts.gave_up_start = True
            self._finish(st, status, **kwargs)

    async def _run_lifecycle(self) -> None:
        """Run the lifecycle's poller and batchers while the pool works; when the run stops, end
        the jobs parked there ``interrupted`` (the final restore starts their instances)."""
        life = self._life
        assert life is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(life.run)
            while not self._pool_idle():
                if self.dispatcher.stopped:
                    self._release_parked(life)
                    if self._pool_idle():
                        break
                await self.dispatcher.changed()
            tg.cancel_scope.cancel()

    def _release_parked(self, life: Lifecycle) -> None:
        for st in life.parked():
            facts = st.power
            if facts is not None and facts.pending_end is not None:
                status, kwargs = facts.pending_end  # its image is done: only the start is left
                facts.pending_end = None
                self._finish(st, status, **kwargs)
            else:
                self._finish(st, Status.INTERRUPTED, reason=f"the run stopped ({self.stopped_by})")
            self.dispatcher.done()

    def _stop_fatal(self, err: ApiError) -> None:
        """No job can succeed any more: stop handing out jobs (the first fatal error wins)."""
        if self.fatal is None:
            self.fatal = err
            self.stopped_by = f"fatal:{err.code}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.stop()

    def _stop_note(self) -> str:
        assert self.fatal is not None
        return f"run stopped: {self.fatal.code}: {self.fatal.message}"

    async def _settle_stopped(self) -> None:
        """After a fatal error, in each worker as it leaves: end the jobs given back for a retry.

        Those whose CreateImage may have been applied are looked up by name first (the workers
        share the list, so the look-ups run side by side).
        """
        self._settling.extend(self.dispatcher.drain_waiting())
        if self.fatal is not None and not lookups_possible_after(self.fatal):
            self._lookups_off = True
        while self._settling:
            st = self._settling.popleft()
            token = _CURRENT.set(st)
            try:
                await self._settle(st)
            finally:
                _CURRENT.reset(token)

    async def _settle(self, st: _JobState) -> None:
        """End a job that is not in flight, once the run has stopped on a fatal error."""
        ending = st.confirm or _Ending(Status.INTERRUPTED, None, self._stop_note())
        if not (st.reconcile or st.confirm is not None):
            # Nothing sent since the last look-up that answered: nothing to look for.
            self._finish(st, ending.status, error=ending.error, reason=ending.reason)
            return
        why = "the run stopped before a look-up by name could be sent"
        await anyio.sleep(max(0.0, st.look_after - self.clock.monotonic()))  # a new image may be listed late
        while not self._lookups_off:
            try:
                found = await self._look_up(st)
            except ApiError as err:
                verdict = self._lookup_failed(st, err)
                why = lookup_failed(err, st.lookup_failures)
                if not isinstance(verdict, Retry):
                    break
                await anyio.sleep(verdict.delay)  # nothing else is left to do while the run stops
                continue
            if found is None:
                self._end_not_found(st, ending)
                return
            image_id, image_status = found
            reason = _ADOPTED_LOST
            if self.options.wait and image_status != "AVAILABLE":
                # Not final: --resume finds it again by name and waits for it.
                reason += f"; not yet seen AVAILABLE ({self._stop_note()}); --resume waits for it"
                self._finish(st, Status.INTERRUPTED, image_id=image_id, image_status=image_status, reason=reason)
                return
            self._finish(st, Status.SUCCEEDED, image_id=image_id, image_status=image_status, reason=reason)
            return
        self._end_unknown(st, why)

    def _skip_rest(self, reason: str) -> None:
        """After a fatal error: every job not yet ended is recorded ``interrupted`` (``--resume``
        runs it again), or, where this run's starting listing already answered for it, ended."""
        for st in self.dispatcher.drain_waiting():
            # Workers settle these as they leave; any left here can no longer be looked up.
            if st.reconcile or st.confirm is not None:
                self._end_unknown(st, "the run stopped before a look-up by name could be sent")
            else:
                self._finish(st, Status.INTERRUPTED, reason=reason)
        for st in self.dispatcher.drain_source():
            existing = self._existing.get(st.job.image_name)
            if not st.resumed_intent:
                self._finish(st, Status.INTERRUPTED, reason=reason)
            elif not self._listed:
                why = f"the listing of existing images failed ({self.fatal.code if self.fatal else 'stopped'})"
                self._end_unknown(st, why)
            elif existing is not None:
                self._carry_restore(st)
                self._finish(
                    st, Status.SUCCEEDED, image_id=existing[0], image_status=existing[1], reason=_ADOPTED_RESUMED
                )
            else:
                # The listing (a look-up of every name, made after the earlier run) did not show it.
                self._finish(st, Status.INTERRUPTED, reason=reason)

    # ----- the run ---------------------------------------------------------------------------

    def _snapshot(self) -> Progress:
        elapsed = self.clock.monotonic() - self._t0
        calls = sum(self.calls.values())
        dispatcher = getattr(self, "dispatcher", None)
        phase, detail = self._phase, ""
        if phase == "listing":
            detail = f"page {self._listing_pages + 1}, {self._listing_images:,} images"
        if phase in {"listing", "running"} and dispatcher is not None and dispatcher.stopped:
            phase, detail = "draining", self.stopped_by or ""
        return Progress(
            total=self.total_jobs,
            by_status=dict(self.by_status),
            in_flight=dispatcher.in_flight if dispatcher is not None else 0,
            waiting=dispatcher.waiting if dispatcher is not None else 0,
            awaiting_images=len(self.waiter),
            api_calls=calls,
            elapsed=elapsed,
            rate=self.meter.throttle.rate if hasattr(self, "meter") else 0.0,
            phase=phase,
            phase_detail=detail,
            requests_in_flight=self._requests_in_flight,
            power=self._power_progress(),
            requests=dict(self.requests),
            retries=self.retries,
            throttled=self.throttled,
        )

    def _power_progress(self) -> dict[str, int]:
        if self._life is None:
            return {}
        return {"down": len(self._ledger.not_running()), **self._life.counts()}

    async def _tick(self) -> None:
        checkpointed = 0
        try:
            while True:
                await anyio.sleep(1.0)
                self.events.flush()
                calls = sum(self.calls.values())
                if calls != checkpointed:
                    # Calls made while no job ends (busy retries, waits) still count after a kill -9.
                    checkpointed = calls
                    self.writer.note()
                if self.progress is not None:
                    self.progress(self._snapshot())
        finally:
            # The tick lives as long as the run: it is cancelled when the run's work is over.
            # Requests cancelled by a hard stop never reached _observe: none is on the wire now.
            self._phase, self._requests_in_flight = "ended", 0

    async def _watch_signals(self, work: anyio.CancelScope, everything: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.stopped_by is None or self.stopped_by.startswith("fatal"):
                    self.stopped_by = signal.Signals(signum).name
                    self.events.log.warning(RUN_STOPPING, reason=self.stopped_by, graceSeconds=self.options.grace)
                    self.dispatcher.stop()
                    if self._phase in {"starting", "listing"}:
                        # Nothing was sent yet and a listing changes nothing: abandon it now
                        # rather than wait out the grace for an answer nobody needs.
                        work.cancel()
                        self._requests_in_flight = 0
                    else:
                        work.deadline = min(work.deadline, anyio.current_time() + self.options.grace)
                else:
                    everything.cancel()
                    return

    def _exit_code(self) -> int:
        fatal = self.fatal is not None or self.list_problem is not None
        left = bool(self._left_stopped) and not self.options.leave_stopped
        return exit_code_for(stopped_by=self.stopped_by, fatal=fatal, by_status=self.by_status, left_stopped=left)

    def _segment(self, exit_code: int | None = None) -> dict[str, Any]:
        """This process's counters, for the journal's checkpoints and the summary."""
        return segment_record(
            segment_id=self._segment_id,
            started_at=self._started,
            now=self.clock.wall(),
            calls=self.calls,
            codes=self.codes,
            retries=self.retries,
            stopped_by=self.stopped_by,
            exit_code=exit_code if exit_code is not None else self._final_exit,
            power=self._power_segment(),
        )

    def _power_segment(self) -> dict[str, Any] | None:
        """This process's power counters (None for a plain run)."""
        if self._cap is None and not self._ledger.stopped:
            return None
        return {**self._ledger.segment(), "peakStopped": self._cap.peak if self._cap is not None else 0}

    def _summary(self, header: RunHeader, exit_code: int, *, worked: bool = True) -> dict[str, Any]:
        segments = [*self._segments, self._segment(exit_code)] if worked else self._segments
        meter = getattr(self, "meter", None)
        return build_summary(
            header=header,
            out_dir=self.directory.path,
            jobs=self.total_jobs,
            by_status=self.by_status,
            error_codes=self.error_codes,
            segments=segments,
            stopped_by=self.stopped_by,
            stop_cause=self.fatal,
            exit_code=exit_code,
            throttle_decreases=meter.throttle.decreases if meter is not None else 0,
            power=self._power_summary(segments),
        )

    def _power_summary(self, segments: list[dict[str, Any]]) -> dict[str, Any] | None:
        """``--stop-running``: what the run did to the fleet's power, summed over every process
        of the run (None for a plain run)."""
        ledger = self._ledger
        shares = [s["power"] for s in segments if s.get("power")]
        if self._cap is None and not ledger.stopped and not shares:
            return None
        left = ledger.not_running()
        return {
            "instancesStopped": sum(int(p.get("stopped", 0)) for p in shares),
            "instancesStarted": sum(int(p.get("started", 0)) for p in shares),
            "forcedStops": sum(int(p.get("forced", 0)) for p in shares),
            "peakStopped": max((int(p.get("peakStopped", 0)) for p in shares), default=0)
            if self._cap is not None
            else None,
            "maxStopped": self._cap.total if self._cap is not None else None,
            "downtimeSecondsTotal": round(sum(float(p.get("downtimeSecondsTotal", 0.0)) for p in shares), 3),
            "downtimeSecondsLongest": max((float(p.get("downtimeSecondsLongest", 0.0)) for p in shares), default=0.0),
            "instancesLeftStopped": left,
            "instancesGone": dict(ledger.gone),
            "leftStoppedOnPurpose": self.options.leave_stopped,
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
        jobs, header = self._prepare()
        summary_path = self.directory.file(SUMMARY_FILE)
        owed = bool(self._ledger.not_running()) and not self.options.leave_stopped
        if self.resumed and self._listed_done >= self.total_jobs and not owed:
            # Every job ended for good: nothing to send. The exit code is what the jobs give,
            # not how an earlier process stopped (a signal, a fatal error since resolved).
            exit_code = self._exit_code()
            summary = self._summary(header, exit_code, worked=False)
            write_atomic(summary_path, json.dumps(summary, indent=2).encode() + b"\n")
            return RunOutcome(exit_code, summary, self.directory.path)
        self.events = EventLog(self.directory.file(EVENTS_FILE).open("a", encoding="utf-8"))
        self.events.log.info(
            RUN_STARTED, runId=header.run_id, jobs=self.total_jobs, resumed=self.resumed, segment=self._segment_id
        )
        self.meter = RateMeter(self.options.rate)
        # Events are flushed before each journal group: an api.attempt event is never lost while
        # the result it led to is on disk (a write(2) per group, no fsync: enough for kill -9).
        self.writer = JournalWriter(self.directory, before_write=self.events.flush)
        self.writer.checkpoint = self._segment
        # Intents are made durable a batch at a time: a bigger batch means fewer pauses for
        # fsync, a smaller one fewer look-ups on resume for jobs recorded but never sent. Half a
        # second of requests (at least two per worker, at most 256) keeps both small.
        admit_batch = int(min(256, max(2 * self.options.concurrency, self.options.rate / 2)))
        self.dispatcher: Dispatcher[_JobState] = Dispatcher(
            self._source(jobs), admit=self._admit, batch=admit_batch, clock=self.clock.monotonic
        )
        client = self.client_factory(
            self.endpoint or DEFAULT_ENDPOINT,
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
                if self._cap is not None:
                    self._life = Lifecycle(self, client, self._cap, self._ledger, clock=self.clock.monotonic)
                with work:
                    if self._ledger.not_running() and not self.options.leave_stopped:
                        # The restart guarantee first: an earlier process stopped these.
                        await self._restore(anyio.current_time() + self.options.start_timeout)
                        if self._cap is not None:
                            self._cap.hold(len(self._ledger.not_running()))  # still down: they count
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
                            if self._life is not None:
                                pool.start_soon(self._run_lifecycle)
                if self.fatal is not None and self.stopped_by and self.stopped_by.startswith("fatal"):
                    self._skip_rest(f"run stopped: {self.fatal.code}: {self.fatal.message}")
                if self._ledger.not_running() and not self.options.leave_stopped:
                    # Whatever happened to the jobs, every instance this run stopped is started
                    # again: within the grace after a signal, else within --start-timeout.
                    signalled = self.stopped_by in {"SIGINT", "SIGTERM"}
                    now = anyio.current_time()
                    deadline = work.deadline if signalled else now + self.options.start_timeout
                    self._left_stopped = await self._restore(max(deadline, now))
                self._write_after_restore()
                # The last checkpoint says how this process ended, for later segments' summaries.
                self._final_exit = self._exit_code()
                self.writer.note()
                with anyio.CancelScope(shield=True):
                    await self.writer.close()
                outer.cancel_scope.cancel()
        finally:
            # After a hard stop: write what is queued (an OSError here must not hide the first one).
            if self._final_exit is None:
                self._final_exit = self._exit_code()
            with contextlib.suppress(OSError):
                self.writer.close_now()
        exit_code = self._exit_code()
        summary = self._summary(header, exit_code)
        write_atomic(summary_path, json.dumps(summary, indent=2).encode() + b"\n")
        self.events.log.info(RUN_ENDED, exitCode=exit_code, stoppedBy=self.stopped_by)
        self.events.close()
        if self.progress is not None:
            self.progress(self._snapshot())
        return RunOutcome(exit_code, summary, self.directory.path)
