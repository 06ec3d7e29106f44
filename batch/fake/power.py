"""The power rules of StopInstances / StartInstances, and the ledger of what clients powered off.

Written from the API fact sheet: StopInstances takes RUNNING instances (and, per the Chinese
documentation, STOPPING ones when the stop is forced, to end a clean shutdown that hangs) to
STOPPING, then STOPPED; StartInstances takes STOPPED instances to BOOTING, then RUNNING. An
instance in the recycle bin is refused with its own code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import FakeApiError, InstanceNotFound, InstanceNotRunning, InstanceNotStopped, InstanceRecycled

__all__ = ["BATCH_ERROR_MODES", "RECYCLED_STATES", "PowerLedger", "power_refusal"]

#: ``listed``: a bad id in a batch is listed as failed; ``whole``: it fails the whole call.
BATCH_ERROR_MODES = ("listed", "whole")
#: Instance states of the recycle bin.
RECYCLED_STATES = frozenset({"RECYCLE"})


def power_refusal(instance_id: str, status: str | None, *, start: bool, forced: bool) -> FakeApiError | None:
    """Why Start (``start``) or Stop may not take this instance now; ``None`` when it may.

    Args:
        instance_id: the instance, for the message.
        status: its status now, ``None`` when it does not exist.
        start: StartInstances (else StopInstances).
        forced: the stop is forced (``forceShutdown`` true or omitted); ignored for a start.
    """
    if status is None:
        return InstanceNotFound(f"instance {instance_id} does not exist")
    if status in RECYCLED_STATES:
        return InstanceRecycled(f"instance {instance_id} is in the recycle bin")
    if start:
        if status == "STOPPED":
            return None
        return InstanceNotStopped(f"instance {instance_id} is {status}; it must be STOPPED to start")
    if status == "RUNNING" or (status == "STOPPING" and forced):
        return None
    if status == "STOPPING":
        return InstanceNotRunning(f"instance {instance_id} is already STOPPING; only a forced stop is accepted now")
    return InstanceNotRunning(f"instance {instance_id} is {status}; it must be RUNNING to stop")


@dataclass
class PowerLedger:
    """What clients did to the instances' power, for ``/_fake/inspect``.

    An instance is *down* from the moment a StopInstances that names it is accepted until it is
    RUNNING again; only instances RUNNING when the fake started count, because those are the
    ones a client must hand back running.

    Args:
        initially_running: the instances RUNNING at the start.
    """

    initially_running: frozenset[str]
    #: instances down now
    down: set[str] = field(default_factory=set)
    #: the most instances down at one moment
    peak_down: int = 0
    #: instance stops accepted, forced (``forceShutdown`` true or omitted)
    forced_stops: int = 0
    #: instance stops accepted, graceful (``forceShutdown`` false)
    graceful_stops: int = 0
    #: StopInstances calls without a ``forceShutdown`` field
    stops_without_force_field: int = 0
    #: instance starts accepted
    starts: int = 0

    @classmethod
    def of(cls, statuses: Iterable[tuple[str, str]]) -> PowerLedger:
        """A ledger for a fleet given as ``(instance id, status)`` pairs.

        Args:
            statuses: every instance and its status at the start.
        """
        return cls(frozenset(ident for ident, status in statuses if status == "RUNNING"))

    def stop_accepted(self, instance_id: str, *, forced: bool) -> None:
        """Count an accepted stop of one instance.

        Args:
            instance_id: the instance.
            forced: the stop is forced.
        """
        if forced:
            self.forced_stops += 1
        else:
            self.graceful_stops += 1
        if instance_id in self.initially_running:
            self.down.add(instance_id)
            self.peak_down = max(self.peak_down, len(self.down))

    def running_again(self, instance_id: str) -> None:
        """An instance reached RUNNING.

        Args:
            instance_id: the instance.
        """
        self.down.discard(instance_id)
