"""The worker loop: the one place that hands jobs out and takes them back.

Each worker takes a job from the :class:`~batch.scheduling.Dispatcher`, runs its step, and
:meth:`Pool.apply` turns the step's :data:`~batch.pipeline.outcome.Outcome` into the one
dispatcher call it needs; deliveries from the shared poller and the batchers come through
:meth:`Pool.apply` too. So every job taken is given back exactly once, here: ``retry_at`` for
:class:`Next`/:class:`Retry`, nothing yet for :class:`Await`/:class:`Join` (the job stays in flight
until its delivery), ``done`` for :class:`End`. An ending whose instance this run stopped
becomes the start step first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from ..errors import ApiError
from ..events import JOB_ENDED
from ..journal import JournalWriter
from ..models import JobResult, Status
from ..options import RunOptions
from ..pipeline import outcome as o
from ..pipeline.context import CURRENT_JOB, Context
from ..pipeline.create import create_step, first_look
from ..pipeline.job import JobState
from ..pipeline.prune import close_ending, divert, on_deleted, prune_fields, prune_step, release
from ..pipeline.wait import on_image, release_awaited
from ..policy import lookups_possible_after
from ..scheduling import Dispatcher
from ..tracking import BatchResult, Resolution
from .resume import end_never_started
from .settle import end_waiting, settle_one
from .tally import Tally

__all__ = ["Pool"]


class Pool:
    """The run's jobs in flight: the dispatcher, the steps, and how jobs end.

    Args:
        ctx: what the steps share.
        dispatcher: hands jobs out.
        tally: counts results.
        stopped_by: why the run stops (read when a parked job is released).
    """

    def __init__(
        self, ctx: Context, dispatcher: Dispatcher[JobState], tally: Tally, stopped_by: Callable[[], str]
    ) -> None:
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.tally = tally
        self._stopped_by = stopped_by
        #: jobs ended while the run stopped, whose instance it stopped: written after the restore
        self.after_restore: list[tuple[JobState, o.End]] = []
        #: jobs to end after a fatal error, shared by the workers (see settle)
        self._settling: deque[JobState] = deque()
        #: told of each result written (``--halt``, ``--canary``)
        self.on_closed: Callable[[JobState, Status], None] | None = None

    @property
    def options(self) -> RunOptions:
        """The run's knobs (what the lifecycle reads)."""
        return self.ctx.options

    @property
    def writer(self) -> JournalWriter:
        """The journal (the lifecycle records each stop in it before sending it)."""
        return self.ctx.writer

    def stop_run(self, err: ApiError) -> None:
        """Stop the run on a fatal error met by a power call.

        Args:
            err: the fatal error.
        """
        self.ctx.stop_run(err)

    # ----- the loop --------------------------------------------------------------------------

    async def worker(self, stop_note: Callable[[], str | None]) -> None:
        """Take jobs and run their steps until none is left; after a fatal error, help settle.

        Args:
            stop_note: why the run stopped on a fatal error (None: it did not).
        """
        while (st := await self.dispatcher.take()) is not None:
            token = CURRENT_JOB.set(st)
            try:
                self.apply(st, await self._advance(st))
            finally:
                CURRENT_JOB.reset(token)
        note = stop_note()
        if note is not None:
            await self._settle(note)

    async def _advance(self, st: JobState) -> o.Outcome:
        """Run the job's steps back to back until one must wait."""
        ctx = self.ctx
        if not st.started_at:
            st.started_at = ctx.clock.wall()
            first = first_look(ctx, st)
            if first is not None:
                return first
        while True:
            outcome = await self._step(st)
            if not (isinstance(outcome, o.Next) and outcome.delay <= 0):
                return outcome
            st.step = outcome.step

    async def _step(self, st: JobState) -> o.Outcome:
        ctx, life = self.ctx, self.ctx.life
        if st.step is o.Step.CHECK:
            if life is None or st.power is None:
                return o.Next(o.Step.CREATE)
            return life.begin(st)
        if st.step is o.Step.STOP:
            assert life is not None
            if ctx.stopping():
                return o.Retry(ctx.now())  # stopping: stop nothing more
            return await life.step(st)
        if st.step is o.Step.START:
            assert life is not None
            return await life.step(st)
        if st.step is o.Step.PRUNE:
            return await prune_step(ctx, st)
        return await create_step(ctx, st)

    def apply(self, st: JobState, outcome: o.Outcome) -> None:
        """Move a job in flight on as ``outcome`` says.

        Args:
            st: the job (taken from the dispatcher, or parked).
            outcome: what its step returned.
        """
        if isinstance(outcome, o.StopRun):
            self.ctx.stop_run(outcome.error)
            outcome = outcome.then
        if isinstance(outcome, o.Next):
            st.step = outcome.step
            self.dispatcher.retry_at(st, self.ctx.now() + outcome.delay)
        elif isinstance(outcome, o.Retry):
            self.dispatcher.retry_at(st, outcome.at)
        elif isinstance(outcome, o.End):
            life = self.ctx.life
            if life is not None and life.should_restart(st) and not self.dispatcher.stopped:
                # The instance this run stopped comes first: start it, then end the job as planned.
                self.apply(st, life.divert_to_start(st, outcome))
                return
            if self.ctx.keep is not None and not self.dispatcher.stopped:
                # --keep: an AVAILABLE image's job prunes before it ends (after its start, above).
                pruning = divert(self.ctx, st, outcome)
                if pruning is not None:
                    self.apply(st, pruning)
                    return
            self.close(st, outcome)
            self.dispatcher.done()
        # Await, Join: the job stays in flight until its delivery

    def on_state(self, r: Resolution[Any]) -> None:
        """The shared poller ended a wait: route it to the step that awaits it.

        Args:
            r: how the wait ended.
        """
        st: JobState = r.token
        if st.awaited_image is not None:
            self.apply(st, on_image(self.ctx, st, r))
        elif self.ctx.life is not None:
            self.ctx.life.on_state(r)

    def on_deleted(self, r: BatchResult[JobState]) -> None:
        """A DeleteImages call answered for one of a job's images: move the job on once all have.

        Args:
            r: the call's answer for the image.
        """
        outcome = on_deleted(self.ctx, r.token, r)
        if outcome is not None:
            self.apply(r.token, outcome)

    # ----- how a job ends --------------------------------------------------------------------

    def close(self, st: JobState, end: o.End) -> None:
        """Write the job's result, or (its instance still owed a start while the run stops) keep
        it for after the run's final restore.

        Args:
            st: the job.
            end: how it ends.
        """
        life = self.ctx.life
        if life is not None and life.should_restart(st):
            self.after_restore.append((st, end))
            return
        now = self.ctx.clock.wall()
        if life is not None:
            life.ended(st)
        if self.ctx.keep is not None:
            end = close_ending(self.ctx, st, end)
        error = end.error
        result = JobResult(
            instance_id=st.job.instance_id,
            image_name=st.job.image_name,
            status=end.status,
            image_id=end.image_id,
            image_status=end.image_status,
            error=error.to_record() if error else None,
            reason=end.reason,
            attempts=st.attempts,
            request_ids=tuple(st.request_ids),
            started_at=st.started_at or now,
            ended_at=now,
            line=st.job.line,
            power=st.power.record() if st.power is not None else None,
        )
        record = result.to_record()
        if self.ctx.keep is not None:
            record.update(prune_fields(st))
            if end.status.final:
                self.tally.count_images(record)
        self.ctx.writer.result_record(record)
        self.tally.count_result(end.status, error)
        if self.on_closed is not None:
            self.on_closed(st, end.status)
        if end.status is not Status.SUCCEEDED or st.attempts != 1:
            # The plain case (one call, success) is fully told by its api.attempt event and
            # its results.jsonl line; log the others, which people look for.
            self.ctx.log.info(
                JOB_ENDED,
                instanceId=st.job.instance_id,
                status=end.status.value,
                imageId=end.image_id,
                code=error.code if error else None,
                attempts=st.attempts,
                reason=end.reason,
            )

    def write_after_restore(self, running_again: set[str], downtime: dict[str, float]) -> None:
        """Write the results kept for after the final restore, with the power facts it settled.

        Args:
            running_again: instances seen RUNNING again.
            downtime: their downtimes.
        """
        pending, self.after_restore = self.after_restore, []
        for st, end in pending:
            facts = st.power
            assert facts is not None
            instance_id = st.job.instance_id
            if instance_id in running_again:
                facts.started = True
                facts.actions.append("started")
                facts.downtime = downtime.get(instance_id)
            else:
                facts.gave_up_start = True
            self.close(st, end)

    # ----- when the run stops ----------------------------------------------------------------

    def release_parked(self) -> None:
        """The run stops: end the jobs parked in the power steps (``interrupted``, or as their
        image said when only the start was left; the final restore starts their instances), and
        those whose deletions were not sent yet (``interrupted``: --resume prunes)."""
        if self.ctx.keep is not None:
            for st, end in release(self.ctx):
                self.close(st, end)
                self.dispatcher.done()
        life = self.ctx.life
        if life is None:
            return
        for st in life.parked():
            facts = st.power
            if facts is not None and facts.pending_end is not None:
                end = facts.pending_end  # its image is done: only the start is left
                facts.pending_end = None
            else:
                end = o.End(Status.INTERRUPTED, reason=f"the run stopped ({self._stopped_by()})")
            self.close(st, end)
            self.dispatcher.done()

    def release_unstarted(self, why: str) -> None:
        """``--halt``: end ``interrupted`` the jobs whose instance nothing was done to yet (their
        state looked up, or queued for a ``--max-stopped`` slot); the others go on to their end.

        Args:
            why: the halt's reason.
        """
        life = self.ctx.life
        if life is None:
            return
        for st in life.release_unstarted():
            self.close(st, o.End(Status.INTERRUPTED, reason=f"the run halted ({why})"))
            self.dispatcher.done()

    def release_awaited(self, jobs: list[JobState], why: str) -> None:
        """End ``--wait`` jobs without knowing how their images end (the run stopped on an error).

        Args:
            jobs: the jobs whose image is awaited.
            why: why waiting stopped.
        """
        for st in jobs:
            self.close(st, release_awaited(self.ctx, st, why))
            self.dispatcher.done()

    async def _settle(self, stop_note: str) -> None:
        """After a fatal error, in each worker as it leaves: end the jobs given back for a retry."""
        self._settling.extend(self.dispatcher.drain_waiting())
        fatal = self.ctx.fatal
        if fatal is not None and not lookups_possible_after(fatal):
            self.ctx.lookups_off = True
        while self._settling:
            st = self._settling.popleft()
            token = CURRENT_JOB.set(st)
            try:
                self.close(st, await settle_one(self.ctx, st, stop_note))
            finally:
                CURRENT_JOB.reset(token)

    def end_waiting(self, reason: str) -> None:
        """After a fatal error: end the jobs given back that no worker settled.

        Args:
            reason: the interruption's reason.
        """
        for st in self.dispatcher.drain_waiting():
            self.close(st, end_waiting(st, reason))

    async def companions(self) -> None:
        """Run the shared poller and the power batchers while the pool works; when the run
        stops, end the jobs parked in the power steps, and (after a fatal error) those awaiting
        an image."""
        ctx = self.ctx
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(ctx.poller.run, self.on_state, on_fatal=ctx.stop_run))
            if ctx.life is not None:
                tg.start_soon(ctx.life.run)
            if ctx.keep is not None:
                tg.start_soon(ctx.keep.deleter.run, self.on_deleted)
            while not self.idle():
                if self.dispatcher.stopped:
                    self.release_parked()
                    if ctx.fatal is not None:
                        awaited = {id(a.token): a.token for a in ctx.poller.drain()}
                        self.release_awaited(list(awaited.values()), f"waiting stopped: {ctx.fatal.code}")
                    if self.idle():
                        break
                await self.dispatcher.changed()
            tg.cancel_scope.cancel()

    def skip_rest(self, reason: str, *, listed: bool) -> None:
        """After a fatal error: every job not yet ended is recorded ``interrupted`` (``--resume``
        runs it again), or, where this run's starting listing already answered for it, ended.

        Args:
            reason: the interruption's reason.
            listed: whether the starting listing answered.
        """
        self.end_waiting(reason)  # workers settle these as they leave; any left here end now
        ctx = self.ctx
        assert ctx.ledger is not None
        for st in self.dispatcher.drain_source():
            end = end_never_started(
                st,
                existing=ctx.existing.get(st.job.image_name),
                listed=listed,
                fatal_code=ctx.fatal.code if ctx.fatal else None,
                ledger=ctx.ledger,
                reason=reason,
            )
            self.close(st, end)

    def idle(self) -> bool:
        """No job is left to run or await (finished, or stopped with nothing in flight)."""
        d = self.dispatcher
        return d.finished or (d.stopped and d.in_flight == 0)
