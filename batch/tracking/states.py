"""What an awaited state means, and what a failed look-up means: pure decisions, table-tested.

An awaited instance ends when it reaches a wanted state (``reached``) or one it never leaves on
its own (``failed``); an awaited image when it is AVAILABLE (``reached``) or FAILED/UNAVAILABLE
(``failed``). Transitional and unknown states keep waiting (the API's enum lists more than its
docs). An item absent from :data:`MISSING_POLLS` answers in a row is ``missing``; one still
waiting at its deadline is ``timeout``; one whose look-ups kept failing is ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from ..errors import ApiError
from ..policy import POLL_FAILURES

__all__ = [
    "FAILED_IMAGE_STATES",
    "FAILING_INSTANCE_STATES",
    "MISSING_POLLS",
    "POLL_FAILURES",
    "REACHED_IMAGE_STATES",
    "Awaited",
    "Kind",
    "Outcome",
    "Resolution",
    "judge",
    "state_outcome",
]

T = TypeVar("T")

#: Instance states it does not leave on its own (recycle bin, being released, never created): an
#: instance there will not reach what we wait for.
FAILING_INSTANCE_STATES = frozenset({"RECYCLE", "RECYCLING", "RELEASING", "CREATE_FAILED"})
#: The image state an awaited image is waited for.
REACHED_IMAGE_STATES = frozenset({"AVAILABLE"})
#: Image states that end the wait as failed (as Terraform's zec image resource treats them).
#: DELETING is not here: a deleted image leaves the listing and ends ``missing``.
FAILED_IMAGE_STATES = frozenset({"FAILED", "UNAVAILABLE"})
#: Answers in a row an item may be absent from (just created: not listed yet) before it is
#: ``missing``.
MISSING_POLLS = 3


class Kind(StrEnum):
    """What is awaited."""

    INSTANCE = "instance"
    IMAGE = "image"


class Outcome(StrEnum):
    """How a wait ended."""

    #: the item reached a wanted state (an image: AVAILABLE)
    REACHED = "reached"
    #: the item is in a state it will not come back from (see the ``*_STATES`` sets)
    FAILED = "failed"
    #: absent from :data:`MISSING_POLLS` answers in a row
    MISSING = "missing"
    #: still transitional at its deadline
    TIMEOUT = "timeout"
    #: its look-ups kept failing (:func:`batch.policy.decide` gave up); the resolution has the error
    ERROR = "error"


def state_outcome(kind: Kind, state: str, want: frozenset[str]) -> Outcome | None:
    """What a looked-up state means for a wait; ``None``: transitional or unknown, keep waiting.

    Args:
        kind: instance or image.
        state: the state the API answered.
        want: the states the wait ends on (a wanted state wins over a failing one).
    """
    if state in want:
        return Outcome.REACHED
    failing = FAILING_INSTANCE_STATES if kind is Kind.INSTANCE else FAILED_IMAGE_STATES
    return Outcome.FAILED if state in failing else None


def judge(
    kind: Kind,
    seen: str | None,
    want: frozenset[str],
    *,
    misses: int,
    missing_polls: int = MISSING_POLLS,
    now: float,
    deadline: float,
) -> Outcome | None:
    """How an item that was just looked up ends, or ``None`` to keep waiting.

    A state seen wins over the deadline: an item that made it in time ends ``reached``.

    Args:
        kind: instance or image.
        seen: its state in the answer, ``None`` when the answer did not list it.
        want: the states the wait ends on.
        misses: answers in a row that did not list it, this one included.
        missing_polls: answers in a row it may be absent from before it is ``missing``.
        now: the poller's clock.
        deadline: when the wait times out, on the same clock.
    """
    if seen is not None:
        outcome = state_outcome(kind, seen, want)
        if outcome is not None:
            return outcome
    elif misses >= missing_polls:
        return Outcome.MISSING
    return Outcome.TIMEOUT if now >= deadline else None


@dataclass(frozen=True, slots=True)
class Resolution(Generic[T]):
    """How one wait ended.

    Args:
        token: what the caller awaited the item for (a job, say).
        kind: instance or image.
        item_id: the instance or image id.
        outcome: how it ended.
        state: the last state seen (``None``: never seen).
        error: the last look-up error, for :attr:`Outcome.ERROR`.
    """

    token: T
    kind: Kind
    item_id: str
    outcome: Outcome
    state: str | None
    error: ApiError | None = None


@dataclass(frozen=True, slots=True)
class Awaited(Generic[T]):
    """A wait that had not ended when :meth:`StatePoller.drain` took it.

    Args:
        token: what the caller awaited the item for.
        kind: instance or image.
        item_id: the instance or image id.
        state: the last state seen (``None``: never seen).
    """

    token: T
    kind: Kind
    item_id: str
    state: str | None
