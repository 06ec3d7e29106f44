"""One job's state as it goes through the steps, and what the run did to its instance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError
from ..models import Job
from ..power import RUNNING, STOPPED, PowerLedger
from ..retention import ImageRecord
from .outcome import End, Step

__all__ = ["JobState", "PowerFacts", "PruneFacts"]


@dataclass(slots=True)
class PowerFacts:
    """What the run did to one job's instance (``--stop-running``)."""

    state_at_start: str | None = None
    #: where the job is within the power steps: "check", "stop", "force", "stop-check",
    #: "stopping", "queued", "create", "settle", "settle-instance", "start", "start-check",
    #: "starting", or None (not looked at yet)
    step: str | None = None
    stopped_by_us: bool = False
    forced: bool = False
    started: bool = False
    held_slot: bool = False
    stop_tries: int = 0
    start_tries: int = 0
    #: set when starting failed for good: the job ends, the run's final restore tries again
    gave_up_start: bool = False
    #: how the job ends once its instance is RUNNING again
    pending_end: End | None = None
    #: with settle: the image made, its status and the job's reason
    image: tuple[str, str, str | None] | None = None
    downtime: float | None = None
    actions: list[str] = field(default_factory=list)

    def carry_restore(self, instance_id: str, ledger: PowerLedger) -> None:
        """A job adopted on resume: what this process's first restore did to its instance (an
        earlier process stopped it) goes into its record; one still down is the job's to start.

        Args:
            instance_id: the job's instance.
            ledger: the instances the run stopped.
        """
        if instance_id not in ledger.stopped:
            return
        if instance_id in ledger.running_again:
            self.started = True
            if self.actions[-1:] != ["started"]:
                self.actions.append("started")
            self.downtime = ledger.downtime.get(instance_id)
        else:
            self.stopped_by_us = True  # not RUNNING again yet: started before the job ends

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


@dataclass(slots=True)
class PruneFacts:
    """``--keep``: the job's prune, from its new image AVAILABLE to its last deletion's end.

    Args:
        image: the new image, as the retention rules see it.
    """

    image: ImageRecord
    #: how the job ends once its prune is done (set when the job would end: the prune comes first)
    ending: End | None = None
    #: the rules were asked (KeepBook.choose): ``send`` holds what they chose
    planned: bool = False
    #: ids to send (DeleteImages, batched with other jobs')
    send: list[str] = field(default_factory=list)
    #: ids whose DeleteImages failed or was not answered: looked up before any resend
    check: list[str] = field(default_factory=list)
    #: ids in a batched call that has not answered yet
    out: int = 0
    #: ids deleted (accepted, or found gone or DELETING), by this process or an earlier one
    pruned: list[str] = field(default_factory=list)
    #: ids the policy's images keep (the new one included)
    kept: list[str] = field(default_factory=list)
    #: ids given up on, with their last error's record
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: failed tries per id (throttled ones aside), for the retry policy
    failures: Counter[str] = field(default_factory=Counter)
    #: each failed id's last error (a listed failure has none of its own)
    last_error: dict[str, ApiError] = field(default_factory=dict)
    #: the prune ran to its end (the job's result carries what it did)
    finished: bool = False

    def record(self) -> dict[str, Any]:
        """The result line's prune fields."""
        out: dict[str, Any] = {"prunedImageIds": list(self.pruned), "keptImageIds": list(self.kept)}
        if self.errors:
            out["pruneErrors"] = [{"imageId": i, **e} for i, e in self.errors.items()]
        return out


@dataclass(slots=True)
class JobState:
    """A job in flight: its step and what its steps need to remember."""

    job: Job
    step: Step = Step.CHECK
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
    confirm: End | None = None
    #: monotonic time before which no look-up by name is sent (``--lookup-delay`` after a
    #: CreateImage whose answer was lost: the API may list the new image late)
    look_after: float = 0.0
    #: ``--wait``: the image awaited by the poller, its reason (None: not awaiting one)
    awaited_image: tuple[str, str | None] | None = None
    #: ``--stop-running``: what the run does to the job's instance (None: a plain run)
    power: PowerFacts | None = None
    #: the tags of the job's last CreateImage (the job's own and the four ownership tags)
    image_tags: tuple[tuple[str, str], ...] = ()
    #: ``--keep``: the job's prune, once its image is AVAILABLE (None: nothing to prune)
    prune: PruneFacts | None = None

    def note_request(self, request_id: str | None) -> None:
        """Keep a failed call's request id for the job's result (once)."""
        if request_id and request_id not in self.request_ids:
            self.request_ids.append(request_id)
