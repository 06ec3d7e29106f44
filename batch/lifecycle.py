"""``--stop-running``: the steps around CreateImage for a RUNNING instance.

A job of a live fleet goes: check (its state, batched) -> stop (a slot under the cap, the
journal's ``stop`` record, StopInstances batched, graceful first) -> await STOPPED (forced after
``--stop-timeout``) -> create (CreateImage, every rule of a plain run) -> settle (its image leaves
CREATING, the instance leaves IMAGING) -> start (StartInstances batched) -> await RUNNING -> end.
An already STOPPED instance goes straight to create and stays STOPPED.

Steps that send or wait run out of the worker pool: a job waiting for a state or a batch stays
in flight in the dispatcher, parked here, and comes back to a worker (``retry_at``) when its
wait ends. A job that would end while its instance is stopped by this run goes to the start
step first (:meth:`Lifecycle.should_restart`); and whatever happens, the run ends with
:func:`batch.power.restore_power` over the ledger.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from .client import ZecClient
from .errors import ApiError, FatalRunError
from .journal import JournalWriter
from .models import Status
from .options import RunOptions
from .policy import Attempts, Call, Retry, RetryOptions, Verdict, decide
from .power import RUNNING, STOPPED, DownCap, PowerLedger
from .tracking import Batcher, BatchResult, Outcome, Resolution, StatePoller

__all__ = ["Lifecycle", "PowerFacts"]


@dataclass(slots=True)
class PowerFacts:
    """What the run did to one job's instance."""

    state_at_start: str | None = None
    #: "check", "stop", "force", "stopping", "create", "settle", "settle-instance", "start",
    #: "start-check", "starting", or None (not started / a plain run)
    step: str | None = None
    stopped_by_us: bool = False
    forced: bool = False
    started: bool = False
    held_slot: bool = False
    stop_tries: int = 0
    start_tries: int = 0
    #: set when starting failed for good: the job ends, the run's final restore tries again
    gave_up_start: bool = False
    #: how the job ends once its instance is RUNNING again: (status, keyword arguments of _finish)
    pending_end: tuple[Status, dict[str, Any]] | None = None
    #: with settle: the image made, its status and the job's reason
    image: tuple[str, str, str | None] | None = None
    downtime: float | None = None
    actions: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``power`` object of the job's result line."""
        final: str | None
        if self.started:
            final = RUNNING
        elif self.stopped_by_us:
            final = STOPPED
        else:
            final = self.state_at_start
        return {
            "stateAtStart": self.state_at_start,
            "actions": list(self.actions),
            "forced": self.forced,
            "downtimeSeconds": None if self.downtime is None else round(self.downtime, 3),
            "finalState": final,
        }


class Host(Protocol):
    """What the lifecycle needs of the run that hosts it."""

    options: RunOptions
    writer: JournalWriter

    def resume_job(self, st: Any, delay: float = 0.0) -> None:
        """Hand a parked job back to a worker (after ``delay`` seconds)."""

    def end_job(self, st: Any, status: Status, **kwargs: Any) -> None:
        """End a parked job (result written, dispatcher told)."""

    def stop_run(self, err: ApiError) -> None:
        """Stop the run on a fatal error."""


class Lifecycle:
    """The power steps of every job of one run, their shared poller, batchers and cap.

    Args:
        host: the run.
        client: the API client.
        cap: the cap on instances down at once.
        ledger: the instances this run stopped.
        clock: monotonic clock.
    """

    def __init__(
        self,
        host: Host,
        client: ZecClient,
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
        interval = self.options.poll_interval
        self.poller: StatePoller[Any] = StatePoller(client, interval=interval, min_gap=min(1.0, interval), clock=clock)
        self.stops: Batcher[Any] = Batcher(lambda ids: client.stop_instances(ids, force_shutdown=False), clock=clock)
        self.forced_stops: Batcher[Any] = Batcher(
            lambda ids: client.stop_instances(ids, force_shutdown=True), clock=clock
        )
        self.starts: Batcher[Any] = Batcher(client.start_instances, clock=clock)
        #: jobs waiting for a slot under the cap, in list order
        self.queue: deque[Any] = deque()
        #: every job parked here (awaiting a state, queued, or in a batched call, sent or not), by
        #: identity: what :meth:`parked` gives back when the run stops, and the jobs whose
        #: deliveries count (one that arrives for a job given back is ignored)
        self._held: dict[int, Any] = {}

    # ----- steps ----------------------------------------------------------------------------

    def begin(self, st: Any) -> None:
        """A job's first step: look its instance's state up (batched with the others)."""
        self._await(st, "check", frozenset({RUNNING, STOPPED}), self.options.stop_timeout)

    async def step(self, st: Any) -> None:
        """Run a job's worker step (stop, force, start); the job stays parked until it answers."""
        power: PowerFacts = st.power
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

    def on_created(self, st: Any, image_id: str, image_status: str, reason: str | None) -> bool:
        """CreateImage answered: a job whose instance this run stopped waits for its image (and the
        instance) to settle before its start. Returns whether the lifecycle took the job."""
        power: PowerFacts = st.power
        if not self.should_restart(st):
            return False
        power.image = (image_id, image_status, reason)
        power.step = "settle"
        self._held[id(st)] = st
        self.poller.await_image(st, image_id, self._clock() + self.options.wait_timeout)
        return True

    def should_restart(self, st: Any) -> bool:
        """Whether a job about to end must first start its instance again."""
        power: PowerFacts | None = getattr(st, "power", None)
        return (
            power is not None
            and power.stopped_by_us
            and not power.started
            and not power.gave_up_start
            and not self.options.leave_stopped
        )

    def divert_to_start(self, st: Any, status: Status, kwargs: dict[str, Any]) -> None:
        """Keep the job's ending for after its instance is RUNNING again; next step: start."""
        st.power.pending_end = (status, kwargs)
        st.power.step = "start"

    def ended(self, st: Any) -> None:
        """A job ended for good: give its slot back (with --leave-stopped the instance never comes back)."""
        power: PowerFacts | None = getattr(st, "power", None)
        if power is not None and power.gave_up_start and not self.options.leave_stopped:
            return  # still down (the final restore tries again): it keeps its slot under the cap
        if power is not None and power.held_slot:
            power.held_slot = False
            self.cap.release(st.job.group)
            self._admit_queued()

    # ----- deliveries ------------------------------------------------------------------------

    def on_state(self, r: Resolution[Any]) -> None:
        """The poller ended a wait."""
        st = r.token
        if id(st) not in self._held:
            return  # given back when the run stopped
        power: PowerFacts = st.power
        step, state = power.step, r.state
        if step in {"check", "stop-check"}:
            self._after_check(st, r)
        elif step == "stopping":
            if r.outcome is Outcome.REACHED:
                self._go(st, "create")
            elif r.outcome is Outcome.TIMEOUT and not power.forced:
                power.step = "force"
                self._resume(st)
            else:
                self._fail(st, "STOP_FAILED", f"instance {state or 'unseen'} after StopInstances ({r.outcome})")
        elif step == "settle":
            self._after_image(st, r)
        elif step == "settle-instance":
            self._finish_image(st)
        elif step == "start-check":
            if state == RUNNING:
                self._running(st)
            elif state == STOPPED and isinstance(again := self._again(power.start_tries, None, "START_FAILED"), Retry):
                power.step = "start"
                self._resume(st, delay=again.delay)
            else:
                self._give_up_start(st, f"instance {state or 'unseen'} and StartInstances refused")
        elif step == "starting":
            if r.outcome is Outcome.REACHED:
                self._running(st)
            else:
                self._give_up_start(st, f"instance still {state or 'unseen'} after StartInstances ({r.outcome})")

    def on_stop(self, r: BatchResult[Any]) -> None:
        """A StopInstances call answered for one job."""
        st = r.token
        if id(st) not in self._held:
            return  # given back when the run stopped (it owes the instance a start: the restore)
        power: PowerFacts = st.power
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
        """A StartInstances call answered for one job."""
        st = r.token
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

    def _after_check(self, st: Any, r: Resolution[Any]) -> None:
        power: PowerFacts = st.power
        state = r.state
        if power.state_at_start is None:
            power.state_at_start = state
        if r.outcome is Outcome.REACHED and state == STOPPED:
            if power.held_slot and not power.stopped_by_us:
                self.ended(st)  # stopped by someone else while it queued: it takes no slot
            self._go(st, "create")
        elif r.outcome is Outcome.TIMEOUT and state == "STOPPING" and power.stopped_by_us and not power.forced:
            power.step = "force"  # a graceful stop that hangs, whatever path it took: force it
            self._resume(st)
        elif r.outcome is Outcome.REACHED and state == RUNNING:
            if power.stopped_by_us and power.stop_tries:
                # A stop that failed or was lost: the instance is RUNNING, try the stop again.
                again = self._again(power.stop_tries, None, "STOP_FAILED")
                if not isinstance(again, Retry):
                    self._fail(st, "STOP_FAILED", "StopInstances kept failing for this instance")
                    return
                power.step = "stop"
                self._resume(st, delay=again.delay)
            elif power.held_slot or self.cap.try_take(st.job.group):
                power.held_slot = True
                self._go(st, "stop")
            else:
                power.step = "queued"
                self._held[id(st)] = st
                self.queue.append(st)
        elif r.outcome is Outcome.FAILED:
            self._fail(st, f"INSTANCE_{state}", f"the instance is {state}")
        elif r.outcome is Outcome.MISSING:
            self._fail(st, "INVALID_INSTANCE_NOT_FOUND", "the instance is not listed by DescribeInstancesStatus")
        else:
            self._fail(st, "STATE_TIMEOUT", f"the instance stayed {state or 'unseen'} ({r.outcome})")

    def _after_image(self, st: Any, r: Resolution[Any]) -> None:
        power: PowerFacts = st.power
        assert power.image is not None
        image_id, _, reason = power.image
        if r.outcome is Outcome.REACHED:
            power.pending_end = (Status.SUCCEEDED, {"image_id": image_id, "image_status": r.state, "reason": reason})
        else:
            code = {Outcome.FAILED: "IMAGE_FAILED", Outcome.MISSING: "IMAGE_NOT_FOUND"}.get(r.outcome, "WAIT_TIMEOUT")
            error = ApiError(code, f"image {image_id} ended {r.state or r.outcome}", action="DescribeCustomImages")
            power.pending_end = (Status.FAILED, {"image_id": image_id, "image_status": r.state, "error": error})
        # The instance stays IMAGING until its image is done: wait for it to rest before the start.
        self._await(st, "settle-instance", frozenset({STOPPED, RUNNING}), self.options.stop_timeout)

    def _finish_image(self, st: Any) -> None:
        power: PowerFacts = st.power
        ending = power.pending_end
        power.pending_end = None
        assert ending is not None
        status, kwargs = ending
        self._end(st, status, **kwargs)  # goes to the start step first (should_restart)

    def _running(self, st: Any) -> None:
        power: PowerFacts = st.power
        power.started = True
        power.actions.append("started")
        power.downtime = self.ledger.seen_running(st.job.instance_id)
        self.ended(st)
        ending = power.pending_end or (Status.INTERRUPTED, {"reason": "started again"})
        power.pending_end = None
        status, kwargs = ending
        self._end(st, status, **kwargs)

    def _give_up_start(self, st: Any, why: str) -> None:
        power: PowerFacts = st.power
        power.gave_up_start = True
        status, kwargs = power.pending_end or (Status.FAILED, {})
        power.pending_end = None
        note = f"{why}; the run tries to start it again before it ends"
        kwargs = {**kwargs, "reason": f"{kwargs['reason']}; {note}" if kwargs.get("reason") else note}
        self._end(st, status, **kwargs)

    def _fail(self, st: Any, code: str, text: str) -> None:
        self._end(st, Status.FAILED, error=ApiError(code, text, action="DescribeInstancesStatus"))

    def _await(self, st: Any, step: str, want: frozenset[str], timeout: float) -> None:
        st.power.step = step
        self._held[id(st)] = st
        self.poller.await_instance(st, st.job.instance_id, want, self._clock() + timeout)
        self.poller.poll_soon()

    def _again(self, tries: int, err: ApiError | None, code: str) -> Verdict:
        """Whether a power call that failed for an id is tried again, and after how long (the
        run's retry policy: :data:`batch.policy.POWER_TRIES` tries, the back-off doubling)."""
        failure = err or ApiError(code, "the call listed this instance as failed")
        return decide(failure, Attempts(failures=tries), self.retry, call=Call.POWER)

    def _resume(self, st: Any, delay: float = 0.0) -> None:
        """Give a parked job back to a worker."""
        self._held.pop(id(st), None)
        self.host.resume_job(st, delay)

    def _end(self, st: Any, status: Status, **kwargs: Any) -> None:
        """End a parked job (the run sends it to its start step first if it owes one)."""
        self._held.pop(id(st), None)
        self.host.end_job(st, status, **kwargs)

    def _go(self, st: Any, step: str) -> None:
        st.power.step = step
        self._resume(st)

    def _admit_queued(self) -> None:
        """Slots came free: let queued jobs (in list order, skipping groups at their cap) stop."""
        kept: deque[Any] = deque()
        while self.queue:
            st = self.queue.popleft()
            if self.cap.try_take(st.job.group):
                st.power.held_slot = True
                # Look again: it may have changed while it queued (someone stopped it, say).
                self._await(st, "check", frozenset({RUNNING, STOPPED}), self.options.stop_timeout)
            else:
                kept.append(st)
        self.queue = kept

    # ----- the loop and the stop -------------------------------------------------------------

    async def run(self) -> None:
        """Run the poller and the batchers until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.poller.run, self.on_state)
            tg.start_soon(self.stops.run, self.on_stop)
            tg.start_soon(self.forced_stops.run, self.on_stop)
            tg.start_soon(self.starts.run, self.on_start)

    def parked(self) -> list[Any]:
        """Take every parked job out of the poller, the batchers and the queue, and give back
        those whose call is out too (the run stops): none is left without a result."""
        self.poller.drain()
        for batcher in (self.stops, self.forced_stops, self.starts):
            batcher.drain()
        self.queue.clear()
        jobs, self._held = list(self._held.values()), {}
        for st in jobs:
            power: PowerFacts = st.power
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
        out["awaiting"] = len(self.poller)
        return out
