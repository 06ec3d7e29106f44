"""What a job does after an error: pure decisions, table-tested, no I/O.

CreateImage is a write: an error may hide a commit (``ApiError.may_have_committed``). A look-up
by name (DescribeCustomImages) is a read: safe to repeat, so it has its own budget
(:data:`LOOKUP_ATTEMPTS`) that never counts against ``--max-attempts``.

The invariant these decisions serve: a job whose CreateImage may have been applied never ends
``failed``, ``skipped`` or ``interrupted`` without a successful look-up by name
(:func:`needs_look_up`); when no look-up can succeed it ends ``unknown``, which ``--resume``
runs again, looking the image up first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import ApiError, AuthenticationError, FatalRunError, InstanceBusyError, PermanentJobError, ThrottledError
from .models import Status
from .text import clip

__all__ = [
    "LOOKUP_ATTEMPTS",
    "LOOKUP_THROTTLED_LIMIT",
    "OUTCOME_UNKNOWN",
    "Decision",
    "Next",
    "after_create_error",
    "after_lookup_error",
    "counts_as_failure",
    "lookup_failed",
    "lookup_timeout",
    "lookups_possible_after",
    "needs_look_up",
    "reason_for",
    "unknown_message",
]

#: Failed look-ups of one job (throttling aside) before it ends ``unknown``. A look-up is a read:
#: repeating it is safe, and each try waits longer for its answer (:func:`lookup_timeout`).
LOOKUP_ATTEMPTS = 6
#: Throttled look-ups of one job before it ends ``unknown``: 429s do not use up the budget above
#: (the run slows down instead), but a stopping run must end even if the API only says 429.
LOOKUP_THROTTLED_LIMIT = 30
#: Seconds a look-up's growing wait for its answer stops growing at (a longer ``--timeout`` is kept).
LOOKUP_TIMEOUT_CAP = 120.0
#: The error code of a job that ended ``unknown``.
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"

#: What a bare API code means for the person reading the result, where the API says too little.
_HINTS = {
    "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT": (
        "CreateImage needs a STOPPED instance; stop it first, or run with --stop-running (stop, image, start again)"
    ),
}


class Next(StrEnum):
    """The step after an error."""

    #: try the same call again after a back-off (a CreateImage that may have been applied is
    #: looked up by name first)
    RETRY = "retry"
    #: the job ends with the decision's status (looked up first when :func:`needs_look_up`)
    END = "end"
    #: no job can succeed any more: the job ends with the decision's status and the run stops
    STOP_RUN = "stop_run"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an error.

    Args:
        next: the step.
        status: how the job ends (``END`` and ``STOP_RUN``).
        reason: a short explanation for the result line.
    """

    next: Next
    status: Status | None = None
    reason: str | None = None


_RETRY = Decision(Next.RETRY)


def counts_as_failure(err: ApiError) -> bool:
    """Whether an error uses up one of ``--max-attempts``: busy and throttled answers do not (they
    have their own limits), permanent and fatal ones end the job at once.

    Args:
        err: what the call raised.
    """
    return not isinstance(err, (InstanceBusyError, ThrottledError, PermanentJobError, FatalRunError))


def reason_for(err: ApiError) -> str | None:
    """A short hint for a code whose API message does not say what to do, else ``None``.

    Args:
        err: the error that ended the job.
    """
    return _HINTS.get(err.code)


#: The reason of the job whose own CreateImage met the run's fatal error.
FATAL_REASON = "this error stopped the run; --resume runs the job again once its cause is fixed"


def after_create_error(
    err: ApiError, *, failures: int, max_attempts: int, busy_seconds: float, busy_timeout: float
) -> Decision:
    """Decide what a job does after its CreateImage raised ``err``.

    Args:
        err: the error.
        failures: attempts that counted as failures so far, this one included
            (:func:`counts_as_failure`).
        max_attempts: ``--max-attempts``.
        busy_seconds: how long the instance has been answering busy (0 when it is not busy).
        busy_timeout: ``--busy-timeout``.
    """
    if isinstance(err, FatalRunError):
        # Not the job's fault (credentials, quota, endpoint): once the cause is fixed, --resume
        # runs it again, so it is not final.
        return Decision(Next.STOP_RUN, Status.INTERRUPTED, FATAL_REASON)
    if isinstance(err, PermanentJobError):
        return Decision(Next.END, Status.FAILED, reason_for(err))
    if isinstance(err, InstanceBusyError):
        if busy_seconds >= busy_timeout:
            return Decision(Next.END, Status.FAILED, f"instance still busy after {busy_timeout:g} s")
        return _RETRY
    if isinstance(err, ThrottledError):
        return _RETRY
    if failures >= max_attempts:
        plural = "s" if failures != 1 else ""
        return Decision(Next.END, Status.FAILED, f"gave up after {failures} failed attempt{plural}")
    return _RETRY


def after_lookup_error(err: ApiError, *, failures: int, throttled: int = 0, budget: int = LOOKUP_ATTEMPTS) -> Decision:
    """Decide what a job does after its look-up by name raised ``err``.

    Every job that looks up may have had its CreateImage applied, so giving up means ``unknown``.

    Args:
        err: the error.
        failures: failed look-ups of this job so far, this one included (throttled ones aside).
        throttled: throttled look-ups of this job so far, this one included.
        budget: failed look-ups allowed.
    """
    if isinstance(err, FatalRunError):
        return Decision(Next.STOP_RUN, Status.UNKNOWN)
    if isinstance(err, ThrottledError):
        return _RETRY if throttled < LOOKUP_THROTTLED_LIMIT else Decision(Next.END, Status.UNKNOWN)
    if isinstance(err, PermanentJobError) or failures >= budget:
        return Decision(Next.END, Status.UNKNOWN)
    return _RETRY


def needs_look_up(status: Status, *, maybe_created: bool) -> bool:
    """Whether a job must be looked up by name before it may end with ``status``.

    Args:
        status: how the job would end.
        maybe_created: an earlier CreateImage of the job may have been applied.
    """
    return maybe_created and status in {Status.FAILED, Status.SKIPPED, Status.INTERRUPTED}


def lookup_timeout(total_timeout: float, failures: int) -> float:
    """Seconds a look-up waits for its answer: ``--timeout``, doubled after each failed look-up (a
    slow listing is still an answer), growing up to :data:`LOOKUP_TIMEOUT_CAP` (so a server that
    never answers costs minutes, not hours, before the job ends ``unknown``).

    Args:
        total_timeout: ``--timeout``.
        failures: failed look-ups of this job so far.
    """
    return min(total_timeout * (1 << min(failures, 30)), max(total_timeout, LOOKUP_TIMEOUT_CAP))


def unknown_message(name: str, why: str) -> str:
    """The message of an ``OUTCOME_UNKNOWN`` error.

    Args:
        name: the image name.
        why: why no look-up could tell (see :func:`lookup_failed`).
    """
    return f"CreateImage may have been applied, so image {clip(name)} may exist; {why}; --resume looks it up again"


def lookup_failed(err: ApiError, attempts: int) -> str:
    """Why a look-up could not tell, for :func:`unknown_message`.

    Args:
        err: the last look-up's error.
        attempts: failed look-ups.
    """
    return f"the look-up by name failed ({attempts} attempt(s), last {err.code}: {clip(err.message)})"


def lookups_possible_after(fatal: ApiError) -> bool:
    """Whether look-ups by name are worth sending after the run stopped on ``fatal``.

    Refused credentials refuse every call: looking up would only add refused calls. A refused
    permission (``AUTHFAILURE_UNAUTHORIZED_OPERATION``) may be CreateImage's alone, and a full
    quota does not stop reads.

    Args:
        fatal: the error that stopped the run.
    """
    return not isinstance(fatal, AuthenticationError) or fatal.code == "AUTHFAILURE_UNAUTHORIZED_OPERATION"
