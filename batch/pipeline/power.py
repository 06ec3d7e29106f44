"""``--stop-running``: the power steps (check, stop, start) around CreateImage for a RUNNING instance.

A job of a live fleet goes: check (its state, batched) -> stop (a slot under the cap, the
journal's ``stop`` record, StopInstances batched, graceful first) -> await STOPPED (forced after
``--stop-timeout``) -> create (CreateImage, every rule of a plain run) -> settle (its image leaves
CREATING, the instance leaves IMAGING) -> start (StartInstances batched) -> await RUNNING -> end.
An already STOPPED instance goes straight to create and stays STOPPED.

Steps that send or wait run out of the worker pool: a job waiting for a state (:data:`~.outcome.AWAIT`)
or a batch (:data:`~.outcome.JOIN`) stays in flight, parked here, and each delivery hands the run
the job's next :data:`~.outcome.Outcome` (:meth:`Host.apply`). A job that would end while its
instance is stopped by this run goes to the start step first (:meth:`Lifecycle.should_restart`);
and whatever happens, the run ends with :func:`batch.power.restore_power` over the ledger.

The check step decides as ``imagebatch plan`` does (:func:`batch.plan.power_verdict`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import anyio

from ..client import ZecClient
from ..errors import ApiError, FatalRunError
from ..journal import JournalWriter
from ..models import Status
from ..options import RunOptions
from ..plan import CREATE, CYCLE, STOP_CREATE, power_verdict
from ..policy import Attempts, Call, Retry, RetryOptions, Verdict, decide
from ..power import RUNNING, STOPPED, DownCap, PowerLedger
from ..tracking import Batcher, BatchResult, Outcome, Resolution, StatePoller
from . import outcome as o
from .job import JobState, PowerFacts

__all__ = ["Host", "Lifecycle"]

#: power sub-steps in which a job awaits a state on the poller
_AWAITING = frozenset({"check", "stop-check", "stopping", "settle", "settle-instance", "start-check", "starting"})


class Host(Protocol):
    """What the lifecycle needs of the run that hosts it."""

    @property
    def options(self) -> RunOptions:
        """The run's knobs."""

    @property
    def writer(self) -> JournalWriter:
        """The journal."""

    def apply(self, st: JobState, outcome: o.Outcome) -> None:
        """Move a parked job on as ``outcome`` says (the one place the dispatcher is told)."""

    def stop_run(self, err: ApiError) -> None:
        """Stop the run on a fatal error."""


class Lifecycle:
    """The power steps of every job of one run, their shared poller, batchers and cap.

    Args:
        host: the run.
        client: the API client.
        poller: the run's one poller of instance and image states.
        cap: the cap on instances down at once.
        ledger: the instances this run stopped.
        clock: monotonic clock.
    """

    def __init__(
        self,
        host: Host,
        client: ZecClient,
        poller: StatePoller[Any],
        cap: DownCap,
        ledger: PowerLedger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.options = host.options
        self.retry = RetryOptions.of(host.options)
        self.cap = cap
        self.ledger = ledger
        self._clock = clock
        self.poller = poller
        self.stops: Batcher[Any] = Batcher(lambda ids: client.stop_instances(ids, force_shutdown=False), clock=clock)
        self.forced_stops: Batcher[Any] = Batcher(
            lambda ids: client.stop_instances(ids, force_shutdown=True), clock=clock
        )
        self.starts: Batcher[Any] = Batcher(client.start_instances, clock=clock)
        #: jobs waiting for a slot under the cap, in list order
        self.queue: deque[JobState] = deque()
        #: every job parked here (awaiting a state, queued, or in a batched call, sent or not), by
        #: identity: what :meth:`parked` gives back when the run stops, and the jobs whose
        #: deliveries count (one that arrives for a job given back is ignored)
        self._held: dict[int, JobState] = {}

    # ----- steps ----------------------------------------------------------------------------

    def begin(self, st: JobState) -> o.Outcome:
        """The check step: look the instance's state up (batched with the others)."""
        self._await(st, "check", frozenset({RUNNING, STOPPED}), self.options.stop_timeout)
        return o.AWAIT

    async def step(self, st: JobState) -> o.Outcome:
        """Run a job's stop (or forced stop) or start step: join the batched call."""
        power = _facts(st)
        iid = st.job.instance_id
        if power.step in {"stop", "force"}:
            forced = power.step == "force" or self.options.force_stop
            # Durable before the call: from here on the run owes the instance a start.
            await self.host.writer.stopping(iid)
            self.ledger.stop_sent(iid)
            power.stop_tries += 1
            self._held[id(st)] = st
            (self.forced_stops if forced else self.stops).add(st, iid)
        elif power.step == "start":
            power.start_tries += 1
            self._held[id(st)] = st
            self.starts.add(st, iid)
        return o.JOIN

    def settle(self, st: JobState, image_id: str, image_status: str, reason: str | None) -> bool:
        """CreateImage answered: a job whose instance this run stopped waits for its image (and the
        instance) to settle before its start. Returns whether the lifecycle took the job."""
        if not self.should_restart(st):
            return False
        power = _facts(st)
        power.image = (image_id, image_status, reason)
        power.step = "settle"
        self._held[id(st)] = st
        self.poller.await_image(st, image_id, self._clock() + self.options.wait_timeout)
        return True

    def should_restart(self, st: JobState) -> bool:
        """Whether a job about to end must first start its instance again."""
        power = st.power
        return (
            power is not None
            and power.stopped_by_us
            and not power.started
            and not power.gave_up_start
            and not self.options.leave_stopped
        )

    def divert_to_start(self, st: JobState, ending: o.End) -> o.Next:
        """Keep the job's ending for after its instance is RUNNING again; next step: start."""
        power = _facts(st)
        power.pending_end = ending
        power.step = "start"
        return o.Next(o.Step.START)

    def ended(self, st: JobState) -> None:
        """A job ended for good: give its slot back (with --leave-stopped the instance never comes back)."""
        power = st.power
        if power is not None and power.gave_up_start and not self.options.leave_stopped:
            return  # still down (the final restore tries again): it keeps its slot under the cap
        if power is not None and power.held_slot:
            power.held_slot = False
            self.cap.release(st.job.group)
            self._admit_queued()

    # ----- deliveries ------------------------------------------------------------------------

    def on_state(self, r: Resolution[Any]) -> None:
        """The poller ended a wait of one of the lifecycle's jobs.

        Args:
            r: how the wait ended.
        """
        st: JobState = r.token
        if id(st) not in self._held:
            return  # given back when the run stopped
        power = _facts(st)
        step, state = power.step, r.state
        if step in {"check", "stop-check"}:
            self._after_check(st, r)
        elif step == "stopping":
            if r.outcome is Outcome.REACHED:
                self._go(st, o.Step.CREATE, "create")
            elif r.outcome is Outcome.TIMEOUT and not power.forced:
                self._go(st, o.Step.STOP, "force")
            else:
                self._fail(st, "STOP_FAILED", f"instance {state or 'unseen'} after StopInstances ({r.outcome})")
        elif step == "settle":
            self._after_image(st, r)
        elif step == "settle-instance":
            ending = power.pending_end
            power.pending_end = None
            assert ending is not None
            self._end(st, ending)  # goes to the start step first (should_restart)
        elif step == "start-check":
            if state == RUNNING:
                self._running(st)
            elif state == STOPPED and isinstance(again := self._again(power.start_tries, None, "START_FAILED"), Retry):
                self._go(st, o.Step.START, "start", delay=again.delay)
            else:
                self._give_up_start(st, f"instance {state or 'unseen'} and StartInstances refused")
        elif step == "starting":
            if r.outcome is Outcome.REACHED:
                self._running(st)
            else:
                self._give_up_start(st, f"instance still {state or 'unseen'} after StartInstances ({r.outcome})")

    def on_stop(self, r: BatchResult[Any]) -> None:
        """A StopInstances call answered for one job.

        Args:
            r: its answer for the job.
        """
        st: JobState = r.token
        if id(st) not in self._held:
            return  # given back when the run stopped (it owes the instance a start: the restore)
        power = _facts(st)
        if r.request_id:
            st.request_ids.append(r.request_id)
        if r.ok:
            forced = power.step == "force" or self.options.force_stop
            self.ledger.stop_accepted(st.job.instance_id, forced=forced)
            power.stopped_by_us = True
            power.forced = power.forced or forced
            power.actions.append("forced" if forced else "stopped")
            self._await(st, "stopping", frozenset({STOPPED}), self.options.stop_timeout)
            return
        if isinstance(r.error, FatalRunError):
            self.host.stop_run(r.error)
        # Listed as failed, or the call failed: the stop may have been applied (a lost answer);
        # from here on treat the instance as stopped by us until it is seen RUNNING.
        power.stopped_by_us = True
        error = None if isinstance(r.error, FatalRunError) else r.error  # the run stops; the job waits to be released
        if not isinstance(self._again(power.stop_tries, error, "STOP_FAILED"), Retry):
            code = r.error.code if r.error else "STOP_FAILED"
            self._fail(st, code, "StopInstances kept failing for this instance")
            return
        self._await(st, "stop-check", frozenset({RUNNING, STOPPED}), self.options.stop_timeout)

    def on_start(self, r: BatchResult[Any]) -> None:
        """A StartInstances call answered for one job.

        Args:
            r: its answer for the job.
        """
        st: JobState = r.token
        if id(st) not in self._held:
            return  # given back when the run stopped
        if r.request_id:
            st.request_ids.append(r.request_id)
        if isinstance(r.error, FatalRunError):
            self.host.stop_run(r.error)
        if r.ok:
            self._await(st, "starting", frozenset({RUNNING}), self.options.start_timeout)
        else:  # listed as failed (already RUNNING? still IMAGING?) or the call failed: look
            self._await(st, "start-check", frozenset({RUNNING, STOPPED}), self.options.start_timeout)

    # ----- inner steps -----------------------------------------------------------------------

    def _after_check(self, st: JobState, r: Resolution[Any]) -> None:
        power = _facts(st)
        state = r.state
        if power.state_at_start is None:
            power.state_at_start = state
        if r.outcome is Outcome.TIMEOUT and state == "STOPPING" and power.stopped_by_us and not power.forced:
            self._go(st, o.Step.STOP, "force")  # a graceful stop that hangs, whatever path it took: force it
            return
        if r.outcome not in {Outcome.REACHED, Outcome.FAILED, Outcome.MISSING}:
            self._fail(st, "STATE_TIMEOUT", f"the instance stayed {state or 'unseen'} ({r.outcome})")
            return
        if r.outcome is Outcome.REACHED and state == RUNNING and power.stopped_by_us and power.stop_tries:
            # A stop that failed or was lost: the instance is RUNNING, try the stop again.
            again = self._again(power.stop_tries, None, "STOP_FAILED")
            if not isinstance(again, Retry):
                self._fail(st, "STOP_FAILED", "StopInstances kept failing for this instance")
                return
            self._go(st, o.Step.STOP, "stop", delay=again.delay)
            return
        # A known state: decide as ``imagebatch plan`` does.
        known = None if r.outcome is Outcome.MISSING else state
        verdict = power_verdict(known, stop_running=True, leave_stopped=self.options.leave_stopped)
        if verdict.action == CREATE:
            if power.held_slot and not power.stopped_by_us:
                self.ended(st)  # stopped by someone else while it queued: it takes no slot
            self._go(st, o.Step.CREATE, "create")
        elif verdict.action in {CYCLE, STOP_CREATE}:
            if power.held_slot or self.cap.try_take(st.job.group):
                power.held_slot = True
                self._go(st, o.Step.STOP, "stop")
            else:
                power.step = "queued"
                self._held[id(st)] = st
                self.queue.append(st)
        else:
            self._fail(st, verdict.code or "STATE_TIMEOUT", verdict.reason)

    def _after_image(self, st: JobState, r: Resolution[Any]) -> None:
        power = _facts(st)
        assert power.image is not None
        image_id, _, reason = power.image
        if r.outcome is Outcome.REACHED:
            # With --keep the prune comes after the start: the worker loop diverts this ending to
            # the prune step once the instance is RUNNING again (downtime is not spent deleting).
            power.pending_end = o.End(Status.SUCCEEDED, image_id=image_id, image_status=r.state, reason=reason)
        else:
            code = {Outcome.FAILED: "IMAGE_FAILED", Outcome.MISSING: "IMAGE_NOT_FOUND"}.get(r.outcome, "WAIT_TIMEOUT")
            error = ApiError(code, f"image {image_id} ended {r.state or r.outcome}", action="DescribeCustomImages")
            power.pending_end = o.End(Status.FAILED, image_id=image_id, image_status=r.state, error=error)
        # The instance stays IMAGING until its image is done: wait for it to rest before the start.
        self._await(st, "settle-instance", frozenset({STOPPED, RUNNING}), self.options.stop_timeout)

    def _running(self, st: JobState) -> None:
        power = _facts(st)
        power.started = True
        power.actions.append("started")
        power.downtime = self.ledger.seen_running(st.job.instance_id)
        self.ended(st)
        ending = power.pending_end or o.End(Status.INTERRUPTED, reason="started again")
        power.pending_end = None
        self._end(st, ending)

    def _give_up_start(self, st: JobState, why: str) -> None:
        power = _facts(st)
        power.gave_up_start = True
        ending = power.pending_end or o.End(Status.FAILED)
        power.pending_end = None
        note = f"{why}; the run tries to start it again before it ends"
        self._end(st, replace(ending, reason=f"{ending.reason}; {note}" if ending.reason else note))

    def _fail(self, st: JobState, code: str, text: str) -> None:
        self._end(st, o.End(Status.FAILED, error=ApiError(code, text, action="DescribeInstancesStatus")))

    def _await(self, st: JobState, step: str, want: frozenset[str], timeout: float) -> None:
        _facts(st).step = step
        self._held[id(st)] = st
        self.poller.await_instance(st, st.job.instance_id, want, self._clock() + timeout)
        self.poller.poll_soon()

    def _again(self, tries: int, err: ApiError | None, code: str) -> Verdict:
        """Whether a power call that failed for an id is tried again, and after how long (the
        run's retry policy: :data:`batch.policy.POWER_TRIES` tries, the back-off doubling)."""
        failure = err or ApiError(code, "the call listed this instance as failed")
        return decide(failure, Attempts(failures=tries), self.retry, call=Call.POWER)

    def _end(self, st: JobState, ending: o.End) -> None:
        """End a parked job (the run sends it to its start step first if it owes one)."""
        self._held.pop(id(st), None)
        self.host.apply(st, ending)

    def _go(self, st: JobState, step: o.Step, sub: str, *, delay: float = 0.0) -> None:
        """Give a parked job back to a worker for its next step."""
        _facts(st).step = sub
        self._held.pop(id(st), None)
        self.host.apply(st, o.Next(step, delay))

    def _admit_queued(self) -> None:
        """Slots came free: let queued jobs (in list order, skipping groups at their cap) stop."""
        kept: deque[JobState] = deque()
        while self.queue:
            st = self.queue.popleft()
            if self.cap.try_take(st.job.group):
                _facts(st).held_slot = True
                # Look again: it may have changed while it queued (someone stopped it, say).
                self._await(st, "check", frozenset({RUNNING, STOPPED}), self.options.stop_timeout)
            else:
                kept.append(st)
        self.queue = kept

    # ----- the loop and the stop -------------------------------------------------------------

    async def run(self) -> None:
        """Run the batchers until cancelled (the run runs the shared poller)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.stops.run, self.on_stop)
            tg.start_soon(self.forced_stops.run, self.on_stop)
            tg.start_soon(self.starts.run, self.on_start)

    def release_unstarted(self) -> list[JobState]:
        """Take out the jobs whose instance nothing was done to yet (its state looked up, or
        queued for a slot) and return them (``--halt``: the run starts no new work; the jobs
        further on go on to their end)."""
        self.queue.clear()
        unstarted = [st for st in self._held.values() if _facts(st).step in {"check", "queued"}]
        for st in unstarted:
            self._held.pop(id(st), None)
            self.poller.forget(st)
        return unstarted

    def parked(self) -> list[JobState]:
        """Take every parked job out of the poller, the batchers and the queue, and give back
        those whose call is out too (the run stops): none is left without a result."""
        for batcher in (self.stops, self.forced_stops, self.starts):
            batcher.drain()
        self.queue.clear()
        jobs, self._held = list(self._held.values()), {}
        for st in jobs:
            self.poller.forget(st)  # the poller is shared: --wait's images stay awaited
            power = _facts(st)
            if power.step in {"stop", "force"}:
                # Its StopInstances may have been sent (the journal says so): the stop may be
                # applied, so the instance is the run's to start again, whatever its job does.
                power.stopped_by_us = True
        return jobs

    def counts(self) -> dict[str, int]:
        """Jobs parked in each power step, for progress displays."""
        out: dict[str, int] = {"queued": len(self.queue)}
        out["stopping"] = len(self.stops) + len(self.forced_stops)
        out["starting"] = len(self.starts)
        out["awaiting"] = sum(1 for st in self._held.values() if _facts(st).step in _AWAITING)
        return out


def _facts(st: JobState) -> PowerFacts:
    """The job's power facts (every job of a lifecycle has them)."""
    assert st.power is not None
    return st.power
