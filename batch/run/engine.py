"""One batch run: job list -> journal -> worker pool -> results, summary and exit code.

The run sets up (:func:`batch.resume.prepare`, the restart guarantee's first restore, the
starting listing), then runs the worker pool (:mod:`.workers`), the shared state poller and the
power batchers side by side until no job is left, and ends with the final restore and the
summary. Run-wide stops (a fatal API error, a signal) go through the dispatcher, which stops
handing out jobs while requests in flight finish.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from ..client import ZecClient
from ..clock import SYSTEM_CLOCK, Clock
from ..credentials import DEFAULT_ENDPOINT, Credentials, parse_endpoint
from ..errors import ApiError, JobListError
from ..events import RUN_ENDED, RUN_STARTED, RUN_STOPPING, EventLog
from ..header import RunHeader
from ..journal import EVENTS_FILE, SUMMARY_FILE, JournalWriter, RunDirectory, write_atomic
from ..options import RunOptions, parse_max_stopped
from ..pipeline.context import Context
from ..pipeline.job import JobState
from ..pipeline.power import Lifecycle
from ..power import DownCap, PowerLedger, restore_power
from ..resume import prepare
from ..scheduling import Dispatcher, RateMeter
from ..snapshot import JobSource
from ..sources import JobList
from ..summary import build_summary, exit_code_for, segment_record
from ..tracking import StatePoller
from .calls import CallWatch
from .halting import Halting
from .keeping import start_keeping
from .listing import list_existing
from .progress import Phase, Progress, RunOutcome, snapshot
from .resume import jobs_at_their_step
from .tally import Tally, checkpoint_due, power_segment, power_summary
from .workers import Pool

__all__ = ["ClientFactory", "Run"]

#: Makes a run's API client; called like :class:`ZecClient` (endpoint, credentials, keywords).
ClientFactory = Callable[..., ZecClient]


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
        verbose: also tell ``notice`` each retry, each job that did not simply succeed, and
            each stop of the run (``--verbose``).
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
        verbose: bool = False,
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
        #: --verbose: retries, jobs that did not simply succeed and stops also go to ``notice``
        self.verbose = verbose
        self.tally = Tally()
        self.fatal: ApiError | None = None
        self.list_problem: str | None = None
        self.stopped_by: str | None = None
        self.total_jobs = 0
        self._segments: list[dict[str, Any]] = []
        self._segment_id = uuid.uuid4().hex[:12]
        self._started = clock.wall()
        self._t0 = clock.monotonic()
        self.phase = Phase()
        #: the starting listing answered (the context's ``existing`` is a look-up of every name)
        self._listed = False
        #: this process's exit code, once its work is over (for the journal's last checkpoint)
        self._final_exit: int | None = None
        #: the instances this run stopped (in every process) and has not seen RUNNING again
        self._ledger = PowerLedger(record_started=self._record_started, clock=clock.wall)
        self._cap: DownCap | None = None
        #: instances the run's final restore could not start (exit code 5)
        self._left_stopped: list[str] = []
        self.ctx: Context | None = None
        self.pool: Pool | None = None
        #: --halt / --canary (None: neither)
        self._halt: Halting | None = None

    # ----- set-up ----------------------------------------------------------------------------

    def _prepare(self) -> tuple[JobList, RunHeader, Iterator[JobState]]:
        """Lock the directory, start or resume the run, validate its job list."""
        prepared = prepare(
            self.directory,
            self.source,
            self.options,
            explicit=self.explicit,
            endpoint=self.endpoint or DEFAULT_ENDPOINT,
            notice=self.notice,
            now=lambda: datetime.fromtimestamp(self.clock.wall(), UTC),  # the run's date: its clock's
        )
        # No endpoint given (flag or ZENLAYER_ENDPOINT): a resumed run talks to the API it started with.
        self.endpoint = self.endpoint or prepared.header.endpoint or DEFAULT_ENDPOINT
        parse_endpoint(self.endpoint)
        self.options = prepared.options
        if self.options.keep is not None and not self.options.wait:
            self.options = replace(self.options, wait=True)  # --keep prunes once the image is AVAILABLE
        self.total_jobs = prepared.validation.jobs
        self._validation = prepared.validation
        for warning in prepared.validation.warnings:
            self.notice(f"warning: {warning}")
        self._listed_done = len(prepared.done_ids)
        self.tally.by_status.update(prepared.by_status)
        self.tally.error_codes.update(prepared.error_codes)
        self._segments = prepared.segments
        self.resumed = prepared.resumed
        # When each owed instance went down, as the earlier processes' checkpoints say (0.0:
        # unknown, no downtime is counted for it).
        down_since: dict[str, float] = {}
        for segment in self._segments:
            down_since.update((segment.get("power") or {}).get("downSince") or {})
        for instance_id in prepared.owed_starts:
            self._ledger.stopped[instance_id] = float(down_since.get(instance_id, 0.0))
        if self.options.stop_running:
            limit = parse_max_stopped(self.options.max_stopped, self.total_jobs)
            self._cap = DownCap(limit, self.options.max_stopped_per_group)
        # A job the last process may have sent CreateImage for is looked up no sooner than
        # --lookup-delay after this process started: that process may have sent it at any moment
        # after its last checkpoint, up to its death, which was before this start.
        jobs = jobs_at_their_step(
            prepared.jobs,
            validated=self.total_jobs,
            done_ids=prepared.done_ids,
            intents=prepared.intents,
            power_history=prepared.power_history,
            with_power=self._cap is not None,
            look_after=self.clock.monotonic() + self.options.lookup_delay,
        )
        if self.options.halt is not None or self.options.canary:
            self._halt = Halting.of(self.options, prepared.by_status, self._halt_now)
        self._run_id = prepared.header.run_id
        return prepared.jobs, prepared.header, jobs

    def _halt_now(self, reason: str) -> None:
        """--halt / --canary: start no new job (nor the power step of one only looked up or
        queued), let those in flight end, restore power; exit 4."""
        if self.stopped_by is None:
            self.stopped_by = f"halt: {reason}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.close_source()
            if self.pool is not None:
                self.pool.release_unstarted(reason)

    def _source(self, jobs: Iterator[JobState]) -> Iterator[JobState]:
        try:
            yield from jobs
        except JobListError as exc:
            # The file was validated before the first call; a bad row now means it was changed
            # under the running job: stop starting jobs, finish the ones in flight, exit 3.
            self.list_problem = exc.problems[0]
            self.stopped_by = f"job list changed during the run: {self.list_problem}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.stop()

    async def _admit(self, batch: list[JobState]) -> None:
        """Make the intents of a batch of new jobs durable with one fsync, before any is sent.

        A job recorded here but never sent (the run stopped first) costs one look-up by name on
        resume, nothing more.
        """
        existing = self.ctx.existing if self.ctx is not None else {}
        fresh = [st for st in batch if not st.intent_written and st.job.image_name not in existing]
        if fresh:
            await self.writer.intent(*(st.job for st in fresh))
            for st in fresh:
                st.intent_written = True

    # ----- API plumbing ----------------------------------------------------------------------

    def stop_fatal(self, err: ApiError) -> None:
        """No job can succeed any more: stop handing out jobs (the first fatal error wins).

        Args:
            err: the fatal error.
        """
        if self.fatal is None and getattr(self, "dispatcher", None) is not None:
            self.fatal = err
            if self.ctx is not None:
                self.ctx.fatal = err
            self.stopped_by = f"fatal:{err.code}"
            self.events.log.warning(RUN_STOPPING, reason=self.stopped_by)
            self.dispatcher.stop()

    def _stop_note(self) -> str | None:
        if self.fatal is None:
            return None
        return f"run stopped: {self.fatal.code}: {self.fatal.message}"

    def _record_started(self, instance_id: str) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.started(instance_id)

    async def _restore(self, client: ZecClient, deadline: float) -> list[str]:
        """Start the instances of the ledger that are not RUNNING (see batch.power)."""
        interval = min(self.options.poll_interval, 5.0)
        self.phase.name = "restoring power"
        left = await restore_power(client, self._ledger, deadline=deadline, interval=interval)
        self.phase.name = "running"
        return left

    # ----- progress, signals, the summary ----------------------------------------------------

    def _snapshot(self) -> Progress:
        dispatcher = getattr(self, "dispatcher", None)
        return snapshot(
            self.phase,
            total=self.total_jobs,
            by_status=self.tally.by_status,
            calls=sum(self.tally.calls.values()),
            elapsed=self.clock.monotonic() - self._t0,
            rate=self.meter.throttle.rate if hasattr(self, "meter") else 0.0,
            dispatcher=dispatcher,
            stopped_by=self.stopped_by,
            ctx=self.ctx,
            requests=self.tally.requests,
            throttled=self.tally.throttled,
        )

    async def _tick(self) -> None:
        try:
            while True:
                await anyio.sleep(1.0)
                self.events.flush()
                calls = sum(self.tally.calls.values())
                since = time.monotonic() - self.writer.checkpointed_at
                if checkpoint_due(calls, self.writer.last_checkpoint, since):
                    # Calls made while no job ends (busy retries, waits) still count after a kill -9.
                    self.writer.note()
                if self.progress is not None:
                    self.progress(self._snapshot())
        finally:
            # The tick lives as long as the run: it is cancelled when the run's work is over.
            # Requests cancelled by a hard stop never reached _observe: none is on the wire now.
            self.phase.name, self.phase.requests_in_flight = "ended", 0

    async def _watch_signals(self, work: anyio.CancelScope, everything: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.stopped_by not in {"SIGINT", "SIGTERM"}:
                    # The first signal, even after the run stopped on its own (a fatal error,
                    # a halt, a changed job list): it drains within --grace; a second one ends it.
                    self.stopped_by = signal.Signals(signum).name
                    self.events.log.warning(RUN_STOPPING, reason=self.stopped_by, graceSeconds=self.options.grace)
                    self.dispatcher.stop()
                    if self.phase.name in {"starting", "listing"}:
                        # Nothing was sent yet and a listing changes nothing: abandon it now
                        # rather than wait out the grace for an answer nobody needs.
                        work.cancel()
                        self.phase.requests_in_flight = 0
                    else:
                        work.deadline = min(work.deadline, anyio.current_time() + self.options.grace)
                else:
                    everything.cancel()
                    return

    def _exit_code(self) -> int:
        fatal = self.fatal is not None or self.list_problem is not None
        # The ledger too: a restore cut short (a second signal) leaves instances down it never listed.
        left = bool(self._left_stopped or self._ledger.not_running()) and not self.options.leave_stopped
        halted = self.stopped_by is not None and self.stopped_by.startswith("halt:")
        return exit_code_for(
            stopped_by=self.stopped_by,
            fatal=fatal,
            by_status=self.tally.by_status,
            left_stopped=left,
            halted=halted,
            not_deleted=self.tally.images["failedToDelete"],
        )

    def _segment(self, exit_code: int | None = None) -> dict[str, Any]:
        """This process's counters, for the journal's checkpoints and the summary."""
        return segment_record(
            segment_id=self._segment_id,
            started_at=self._started,
            now=self.clock.wall(),
            calls=self.tally.calls,
            codes=self.tally.codes,
            retries=self.ctx.retries if self.ctx is not None else 0,
            stopped_by=self.stopped_by,
            exit_code=exit_code if exit_code is not None else self._final_exit,
            power=power_segment(self._ledger, self._cap),
        )

    def _summary(self, header: RunHeader, exit_code: int, *, worked: bool = True) -> dict[str, Any]:
        segments = [*self._segments, self._segment(exit_code)] if worked else self._segments
        meter = getattr(self, "meter", None)
        return build_summary(
            header=header,
            out_dir=self.directory.path,
            jobs=self.total_jobs,
            by_status=self.tally.by_status,
            error_codes=self.tally.error_codes,
            segments=segments,
            stopped_by=self.stopped_by,
            stop_cause=self.fatal,
            exit_code=exit_code,
            throttle_decreases=meter.throttle.decreases if meter is not None else 0,
            power=power_summary(self._ledger, self._cap, segments, leave_stopped=self.options.leave_stopped),
            images=self.tally.image_totals() if self.options.keep is not None else None,
        )

    # ----- the run ---------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        """Run to the end (or to a stop) and return the outcome. The lock is released after."""
        try:
            return await self._execute()
        finally:
            events = getattr(self, "events", None)
            if events is not None:
                events.close()
            self.directory.unlock()

    def _open_client(self) -> ZecClient:
        return self.client_factory(
            self.endpoint or DEFAULT_ENDPOINT,
            self.credentials,
            pool_size=self.options.concurrency,
            connect_timeout=self.options.connect_timeout,
            total_timeout=self.options.total_timeout,
            gate=self.watch.gate,
            observer=self.watch.observe,
        )

    def _context(self, client: ZecClient) -> Context:
        opts = self.options
        interval = opts.poll_interval
        poller: StatePoller[JobState] = StatePoller(
            client, interval=interval, min_gap=min(1.0, interval), clock=self.clock.monotonic
        )
        return Context(
            options=opts,
            clock=self.clock,
            rng=random.Random(opts.seed),  # noqa: S311 - jitter, not crypto
            log=self.events.log,
            writer=self.writer,
            client=client,
            meter=self.meter,
            poller=poller,
            stop_run=self.stop_fatal,
            stopping=lambda: self.dispatcher.stopped,
            ledger=self._ledger,
            run_id=self._run_id,
        )

    async def _execute(self) -> RunOutcome:
        # Refused as bad input, a resume still starts what its run stopped: batch/run_cmd.py does,
        # once the directory is unlocked (batch/run/refusal.py).
        _jobs, header, states = self._prepare()
        summary_path = self.directory.file(SUMMARY_FILE)
        owed = bool(self._ledger.not_running()) and not self.options.leave_stopped
        if self.resumed and self._listed_done >= self.total_jobs and not owed:
            # Every job ended for good: nothing to send. The exit code is what the jobs give,
            # not how an earlier process stopped (a signal, a fatal error since resolved).
            exit_code = self._exit_code()
            summary = self._summary(header, exit_code, worked=False)
            write_atomic(summary_path, json.dumps(summary, indent=2).encode() + b"\n")
            return RunOutcome(exit_code, summary, self.directory.path)
        self.events = EventLog(
            self.directory.file(EVENTS_FILE).open("a", encoding="utf-8"), echo=self.notice if self.verbose else None
        )
        self.events.log.info(
            RUN_STARTED, runId=header.run_id, jobs=self.total_jobs, resumed=self.resumed, segment=self._segment_id
        )
        self.meter = RateMeter(self.options.rate)
        self.watch = CallWatch(
            self.meter,
            self.phase,
            self.tally,
            self.events.log,
            concurrency=self.options.concurrency,
            stop_run=self.stop_fatal,
        )
        # Events are flushed before each journal group: an api.attempt event is never lost while
        # the result it led to is on disk (a write(2) per group, no fsync: enough for kill -9).
        self.writer = JournalWriter(self.directory, before_write=self.events.flush)
        self.writer.checkpoint = self._segment
        # Intents are made durable a batch at a time: a bigger batch means fewer pauses for
        # fsync, a smaller one fewer look-ups on resume for jobs recorded but never sent. Half a
        # second of requests (at least two per worker, at most 256) keeps both small.
        admit_batch = int(min(256, max(2 * self.options.concurrency, self.options.rate / 2)))
        source = self._source(states)
        halting = self._halt
        self.dispatcher: Dispatcher[JobState] = Dispatcher(
            halting.canaries(source) if halting is not None else source,
            admit=self._admit,
            batch=admit_batch,
            clock=self.clock.monotonic,
        )
        if halting is not None:
            halting.attach(self.dispatcher, source)
        client = self._open_client()
        try:
            async with client, anyio.create_task_group() as outer:
                ctx = self.ctx = self._context(client)
                pool = self.pool = Pool(ctx, self.dispatcher, self.tally, lambda: str(self.stopped_by))
                pool.on_closed = halting.job_ended if halting is not None else None
                if self._cap is not None:
                    ctx.life = Lifecycle(pool, client, ctx.poller, self._cap, self._ledger, clock=self.clock.monotonic)
                outer.start_soon(self.writer.run)
                work = anyio.CancelScope()
                if self.handle_signals:
                    outer.start_soon(self._watch_signals, work, outer.cancel_scope)
                outer.start_soon(self._tick)
                with work:
                    if self._ledger.not_running() and not self.options.leave_stopped:
                        # The restart guarantee first: an earlier process stopped these.
                        await self._restore(client, anyio.current_time() + self.options.start_timeout)
                        if self._cap is not None:
                            self._cap.hold(len(self._ledger.not_running()))  # still down: they count
                    try:
                        await list_existing(client, ctx, self._validation, self.phase)
                        self._listed = True
                        ctx.keep = await start_keeping(
                            client, ctx, self.directory, self.tally, self.phase, resumed=self.resumed
                        )
                    except ApiError as err:
                        self.fatal = ctx.fatal = err
                        self.stopped_by = f"fatal:{err.code}"
                        self.dispatcher.stop()
                    else:
                        async with anyio.create_task_group() as tasks:
                            for _ in range(self.options.concurrency):
                                tasks.start_soon(pool.worker, self._stop_note)
                            tasks.start_soon(pool.companions)
                if self.fatal is not None and self.stopped_by and self.stopped_by.startswith("fatal"):
                    pool.skip_rest(f"run stopped: {self.fatal.code}: {self.fatal.message}", listed=self._listed)
                if self._ledger.not_running() and not self.options.leave_stopped:
                    # Whatever happened to the jobs, every instance this run stopped is started
                    # again: within the grace after a signal, else within --start-timeout.
                    signalled = self.stopped_by in {"SIGINT", "SIGTERM"}
                    now = anyio.current_time()
                    deadline = work.deadline if signalled else now + self.options.start_timeout
                    self._left_stopped = await self._restore(client, max(deadline, now))
                pool.write_after_restore(self._ledger.running_again, self._ledger.downtime)
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
