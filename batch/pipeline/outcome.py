"""What a step returns: the one thing the worker loop needs to know to move a job on.

A step never touches the dispatcher. It returns an :data:`Outcome` and the run's worker loop
(:meth:`batch.run.engine.Run.apply`) turns it into the dispatcher call, so "every job taken is
given back exactly once" is kept in one place:

* :class:`Next`: go on to another step, now (in the same worker turn) or after a delay;
* :class:`Retry`: run the same step again at a given time (a back-off, a busy instance);
* :class:`Await`: wait for a state (the shared poller delivers it); the job stays in flight;
* :class:`Join`: wait for a batched call (StopInstances, StartInstances) to answer for it;
* :class:`End`: the job is over, with its status (``failed`` is an ``End`` with an error);
* :class:`StopRun`: a fatal error stops the run, then the job goes on as ``then`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ApiError
from ..models import Status

__all__ = ["AWAIT", "JOIN", "Await", "End", "Join", "Next", "Outcome", "Retry", "Step", "StopRun"]


class Step(StrEnum):
    """The steps of a job, in order.

    ``check`` first applies the name rule (an image by the job's name ends it), then, with
    ``--stop-running``, looks the instance's state up. A halt check before a job's first call
    goes at the top of the check step (:func:`batch.pipeline.create.first_look`). ``prune``
    (``--keep``) comes last: once the image is AVAILABLE, a job that would end deletes its
    instance's older images first (after ``start``, for an instance this run stopped).
    """

    CHECK = "check"
    STOP = "stop"
    CREATE = "create"
    WAIT = "wait"
    START = "start"
    PRUNE = "prune"


@dataclass(frozen=True, slots=True)
class Next:
    """Go on to ``step``: in this worker turn (``delay`` 0), or back to a worker after ``delay`` s."""

    step: Step
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the job's step again at ``at`` (monotonic seconds)."""

    at: float


@dataclass(frozen=True, slots=True)
class Await:
    """The job waits for a state; a delivery from the poller moves it on."""


@dataclass(frozen=True, slots=True)
class Join:
    """The job waits for a batched call to answer for it; a delivery moves it on."""


#: the two outcomes that carry nothing
AWAIT = Await()
JOIN = Join()


@dataclass(frozen=True, slots=True)
class End:
    """The job is over (unless its instance is owed a start: then that comes first).

    Args:
        status: the result's status.
        image_id: the image made or found.
        image_status: its status.
        error: why it failed.
        reason: a note for the result.
    """

    status: Status
    image_id: str | None = None
    image_status: str | None = None
    error: ApiError | None = None
    reason: str | None = None

    def fields(self) -> dict[str, Any]:
        """The result's fields as keyword arguments."""
        return {
            "image_id": self.image_id,
            "image_status": self.image_status,
            "error": self.error,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class StopRun:
    """A fatal error: the run stops (the first one wins), then ``then`` applies to the job."""

    error: ApiError
    then: Outcome


Outcome = Next | Retry | Await | Join | End | StopRun
