"""Live fleets: the cap on instances down at once, the ledger of what this run stopped, and the
restart guarantee.

CreateImage needs a STOPPED instance. With ``--stop-running`` a run stops RUNNING instances
(``forceShutdown`` false first, forced after ``--stop-timeout``), images them and starts them
again. Two things keep that safe:

* :class:`DownCap`: at no moment are more than ``--max-stopped`` instances (and
  ``--max-stopped-per-group`` of one job-list group) stopped by this run and not yet RUNNING.
* :class:`PowerLedger` and :func:`restore_power`: every instance this run stopped is in the
  journal (``stop`` record, durable before StopInstances is sent) until it is seen RUNNING
  (``started``). Whatever happens to a job, the run ends with :func:`restore_power`, which starts
  every instance of the ledger that is not RUNNING; a ``--resume`` does it before anything else.
  Only ``--leave-stopped`` turns this off.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from .client import ZecClient
from .errors import ApiError, FatalRunError

__all__ = [
    "FAILING_STATES",
    "FINAL_STATES",
    "DownCap",
    "PowerLedger",
    "restore_power",
]

RUNNING, STOPPED = "RUNNING", "STOPPED"
#: States an instance rests in; every other state (STOPPING, BOOTING, IMAGING, unknown ...) is
#: a transition to wait out.
FINAL_STATES = frozenset({RUNNING, STOPPED})
#: States that end a job: the instance is going away or never came up.
FAILING_STATES = frozenset({"RECYCLE", "RECYCLING", "RELEASING", "CREATE_FAILED"})


@dataclass
class DownCap:
    """How many instances this run may have down at once, in all and per group.

    Args:
        total: ``--max-stopped`` resolved to a count.
        per_group: ``--max-stopped-per-group`` (``None``: no per-group cap).
    """

    total: int
    per_group: int | None = None
    down: int = 0
    by_group: Counter[str] = field(default_factory=Counter)
    peak: int = 0

    def try_take(self, group: str | None) -> bool:
        """Take a slot for one more instance to stop, if the caps allow it."""
        if self.down >= self.total:
            return False
        if group is not None and self.per_group is not None and self.by_group[group] >= self.per_group:
            return False
        self.down += 1
        if group is not None:
            self.by_group[group] += 1
        self.peak = max(self.peak, self.down)
        return True

    def hold(self, count: int) -> None:
        """Count instances already down (stopped by an earlier process, not yet started again)."""
        self.down += count
        self.peak = max(self.peak, self.down)

    def release(self, group: str | None) -> None:
        """Give a slot back: the instance is RUNNING again (or the run leaves it stopped)."""
        self.down -= 1
        if group is not None:
            self.by_group[group] -= 1


@dataclass
class PowerLedger:
    """The instances this run stopped, and which of them it has seen RUNNING again.

    Args:
        record_started: called once for each instance seen RUNNING again (the journal's
            ``started`` record).
        clock: wall clock, for downtime.
    """

    record_started: Callable[[str], None]
    clock: Callable[[], float] = time.time
    #: instance -> wall time StopInstances was accepted (0.0 for one stopped by an earlier process)
    stopped: dict[str, float] = field(default_factory=dict)
    running_again: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)
    downtime: dict[str, float] = field(default_factory=dict)
    #: instances owed a start that are gone (not found, recycled): no longer owed, reported
    gone: dict[str, str] = field(default_factory=dict)
    #: instances this process sent StopInstances for (a resumed run sums its processes' counts)
    sent_here: set[str] = field(default_factory=set)
    _accepted: set[str] = field(default_factory=set)

    def stop_sent(self, instance_id: str) -> None:
        """StopInstances may reach the API for an instance (its journal record is durable):
        from now on the run owes it a start, until it is seen RUNNING."""
        if instance_id not in self.stopped or instance_id in self.running_again:
            self.stopped[instance_id] = self.clock()  # a new cycle; a re-sent stop keeps its start
        self.running_again.discard(instance_id)
        self.sent_here.add(instance_id)

    def stop_accepted(self, instance_id: str, *, forced: bool) -> None:
        """StopInstances was accepted: downtime counts from the first acceptance."""
        if instance_id not in self._accepted:
            self._accepted.add(instance_id)
            self.stopped[instance_id] = self.clock()
        if forced:
            self.forced.add(instance_id)

    def give_up(self, instance_id: str, state: str) -> None:
        """An instance owed a start is gone (not found, in the recycle bin): owe it no more."""
        if instance_id in self.stopped and instance_id not in self.running_again:
            self.gone[instance_id] = state
            self.running_again.add(instance_id)
            self.record_started(instance_id)  # the journal's word for "owed no start any more"

    def seen_running(self, instance_id: str) -> float | None:
        """An instance this run stopped is RUNNING again; returns its downtime (None if unknown)."""
        if instance_id not in self.stopped or instance_id in self.running_again:
            return self.downtime.get(instance_id)
        self.running_again.add(instance_id)
        self.record_started(instance_id)
        since = self.stopped[instance_id]
        if since:
            self.downtime[instance_id] = max(0.0, self.clock() - since)
        return self.downtime.get(instance_id)

    def segment(self) -> dict[str, Any]:
        """This process's share of the run's power counters, for its journal checkpoints; with
        ``downSince``, the wall time each instance still down went down (a resume carries it)."""
        downtimes = list(self.downtime.values())
        return {
            "stopped": len(self.sent_here),
            "started": len(self.running_again),
            "forced": len(self.forced),
            "downtimeSecondsTotal": round(sum(downtimes), 3),
            "downtimeSecondsLongest": round(max(downtimes), 3) if downtimes else 0.0,
            "downSince": {i: self.stopped[i] for i in self.not_running() if self.stopped[i]},
        }

    def not_running(self) -> list[str]:
        """Instances this run stopped and has not seen RUNNING again."""
        return [i for i in self.stopped if i not in self.running_again]


async def _each_on_its_own(send: Callable[[list[str]], Awaitable[object]], ids: list[str]) -> None:
    """Send ``ids`` in one call; if the whole call is refused, send each id on its own.

    One id the API refuses (or a fault tied to one instance) can fail a whole batch: without
    this, the same batch would fail at every round and every instance in it would stay down.
    A fatal error (credentials) is raised at once; other errors of single ids are left to the
    next round's look-up.
    """
    try:
        await send(ids)
    except FatalRunError:
        raise
    except ApiError:
        if len(ids) == 1:
            raise
        for instance_id in ids:
            try:
                await send([instance_id])
            except FatalRunError:
                raise
            except ApiError:
                continue  # this one is looked up again at the next round


async def restore_power(
    client: ZecClient,
    ledger: PowerLedger,
    *,
    deadline: float,
    interval: float,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Start every instance of the ledger that is not RUNNING; return those still not RUNNING.

    It looks their states up (100 a call), starts the STOPPED ones (100 a call), forces the
    STOPPING ones (a graceful stop may hang), waits out IMAGING and BOOTING, owes nothing more to
    instances that are gone (recycled, not found), and stops at ``deadline`` (monotonic).
    A failed call is tried again at the next round; a fatal one (credentials) ends it.

    Args:
        client: the API client.
        ledger: what this run stopped.
        deadline: when to give up (monotonic seconds).
        interval: seconds between rounds.
        sleep: the sleep (injectable for tests).
        clock: the monotonic clock.
    """
    pending = ledger.not_running()
    absent: dict[str, int] = {}
    while pending:
        try:
            states = await client.describe_instances_status(pending)
            for instance_id in pending:
                state = states.get(instance_id)
                if state == RUNNING:
                    ledger.seen_running(instance_id)
                elif state in FAILING_STATES:
                    ledger.give_up(instance_id, state)
                elif state is None:
                    absent[instance_id] = absent.get(instance_id, 0) + 1
                    if absent[instance_id] >= 3:  # not listed three times in a row: gone
                        ledger.give_up(instance_id, "NOT_FOUND")
            # A graceful stop may hang in STOPPING: force it, then the next round starts it.
            stuck = [i for i in pending if states.get(i) == "STOPPING"]
            if stuck:
                await _each_on_its_own(lambda ids: client.stop_instances(ids, force_shutdown=True), stuck)
                for instance_id in stuck:
                    ledger.forced.add(instance_id)
            to_start = [i for i in pending if states.get(i) == STOPPED]
            if to_start:
                await _each_on_its_own(client.start_instances, to_start)
        except FatalRunError:
            break
        except ApiError:
            pass  # the next round tries again
        pending = ledger.not_running()
        if not pending or clock() + interval > deadline:
            break
        await sleep(interval)
    return ledger.not_running()
