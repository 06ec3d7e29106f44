"""What a call does after an error: one pure retry policy (:func:`decide`), table-tested, no I/O.

Every call of a run asks :func:`decide` what comes after an error: CreateImage, a look-up by
name, the starting listing, the state poller's batched look-ups and the power calls. Each kind
of call (:class:`Call`) has its own budget; the answer is :class:`Retry` (with its delay, from a
jitter draw the caller makes, so the decision stays pure), :class:`Failed` or :class:`StopRun`.

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
from typing import TYPE_CHECKING

from .errors import (
    ApiError,
    AuthenticationError,
    FatalRunError,
    InstanceBusyError,
    PermanentJobError,
    RetryableError,
    ThrottledError,
)
from .models import Status
from .text import clip

if TYPE_CHECKING:
    from .options import RunOptions

__all__ = [
    "FATAL_REASON",
    "LOOKUP_ATTEMPTS",
    "LOOKUP_THROTTLED_LIMIT",
    "OUTCOME_UNKNOWN",
    "POLL_FAILURES",
    "POWER_TRIES",
    "Attempts",
    "Call",
    "Failed",
    "Retry",
    "RetryOptions",
    "StopRun",
    "Verdict",
    "backoff",
    "counts_as_failure",
    "decide",
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
#: Failed look-ups in a row of one awaited item (throttled ones aside) before its wait ends ``error``.
POLL_FAILURES = 5
#: StopInstances / StartInstances tries of one id before the job gives up (a start left undone
#: goes to the run's final restore).
POWER_TRIES = 5
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


class Call(StrEnum):
    """What kind of call failed: each has its own budget."""

    #: CreateImage, a write: ``--max-attempts`` failures, busy until ``--busy-timeout``
    CREATE = "create"
    #: a look-up by name, a read whose giving up means ``unknown``: :data:`LOOKUP_ATTEMPTS`
    LOOKUP = "look-up"
    #: the starting listing of the account's images: :data:`LOOKUP_ATTEMPTS` tries, then the run stops
    LISTING = "listing"
    #: one batched look-up of the state poller: :data:`POLL_FAILURES` in a row per item
    POLL = "poll"
    #: StopInstances / StartInstances for one id: :data:`POWER_TRIES` tries, a plain doubling back-off
    POWER = "power"
    #: DeleteImages for one image (retention), each failure looked at before a resend:
    #: ``--max-attempts`` failures, then the image is recorded as not deleted
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Attempts:
    """What a call has been through so far (this error included).

    Args:
        failures: failed tries that count against the call's budget (:func:`counts_as_failure`
            for CreateImage; every failed try but throttled ones for reads; every try for power).
        throttled: 429 answers so far.
        busy_seconds: how long the instance has answered busy (CreateImage).
        busy_waits: busy answers waited out so far (CreateImage).
        server_wait: seconds the server asked to wait (``Retry-After``, as the throttle took it).
        jitter: a draw in ``[0, 1)`` from the run's random source: the back-off is
            ``jitter * window`` (full jitter), so the decision stays a pure function.
    """

    failures: int = 0
    throttled: int = 0
    busy_seconds: float = 0.0
    busy_waits: int = 0
    server_wait: float = 0.0
    jitter: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """The knobs of :func:`decide`.

    Args:
        max_attempts: ``--max-attempts`` (CreateImage).
        busy_timeout: ``--busy-timeout``.
        backoff_base: ``--backoff-base``, seconds of the first back-off window.
        backoff_cap: ``--backoff-cap``, the largest window.
        lookup_attempts: failed look-ups (and listing tries) allowed.
        throttled_limit: throttled look-ups of one job allowed (a stopping run must end).
        poll_failures: failed polls in a row of one item allowed.
        power_tries: StopInstances / StartInstances tries of one id.
    """

    max_attempts: int = 8
    busy_timeout: float = 1800.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    lookup_attempts: int = LOOKUP_ATTEMPTS
    throttled_limit: int = LOOKUP_THROTTLED_LIMIT
    poll_failures: int = POLL_FAILURES
    power_tries: int = POWER_TRIES

    @classmethod
    def of(cls, options: RunOptions) -> RetryOptions:
        """The retry knobs of a run's options.

        Args:
            options: the run's options.
        """
        return cls(
            max_attempts=options.max_attempts,
            busy_timeout=options.busy_timeout,
            backoff_base=options.backoff_base,
            backoff_cap=options.backoff_cap,
        )


@dataclass(frozen=True, slots=True)
class Retry:
    """Try the same call again after ``delay`` seconds.

    Args:
        delay: seconds to wait (never less than the server asked for).
    """

    delay: float


@dataclass(frozen=True, slots=True)
class Failed:
    """Give up on the call: the job ends with ``status`` (a look-up giving up ends ``unknown``).

    Args:
        status: how the job ends.
        reason: a short explanation for the result line.
    """

    status: Status = Status.FAILED
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StopRun:
    """No call can succeed any more: the job ends with ``status`` and the run stops.

    Args:
        status: how the job ends.
        reason: a short explanation for the result line.
    """

    status: Status = Status.INTERRUPTED
    reason: str | None = None


Verdict = Retry | Failed | StopRun


def backoff(attempt: int, jitter: float, *, base: float, cap: float) -> float:
    """Exponential back-off with full jitter: ``jitter * min(cap, base * 2**attempt)``.

    Args:
        attempt: waits already made (0 for the first).
        jitter: a draw in ``[0, 1)``.
        base: seconds of the first window.
        cap: the largest window.
    """
    return jitter * min(cap, base * 2.0 ** min(max(attempt, 0), 62))


def decide(err: ApiError, attempts: Attempts, options: RetryOptions, *, call: Call) -> Verdict:
    """What a call does after it raised ``err``: retry after a delay, fail, or stop the run.

    The one retry policy of a run: CreateImage, look-ups by name, the starting listing, the
    state poller and the power calls all ask it. A fatal error (credentials, quota, endpoint)
    always stops the run; throttling always retries (reads only up to ``throttled_limit``, so a
    stopping run ends), never sooner than the server asked; a permanent error fails at once.

    Args:
        err: the error.
        attempts: what the call has been through, this error included.
        options: the budgets and the back-off.
        call: which kind of call failed.
    """
    base, cap = options.backoff_base, options.backoff_cap
    if isinstance(err, FatalRunError):
        if call is Call.CREATE:
            # Not the job's fault: once the cause is fixed, --resume runs it again (not final).
            return StopRun(Status.INTERRUPTED, FATAL_REASON)
        return StopRun(Status.UNKNOWN if call is Call.LOOKUP else Status.INTERRUPTED)
    if call is Call.POWER:
        if attempts.failures >= options.power_tries:
            return Failed()
        # Deterministic: few ids, and each is looked up before it is sent again.
        return Retry(min(cap, base * 2.0 ** max(0, attempts.failures - 1)))
    throttled = isinstance(err, ThrottledError)
    if call is Call.DELETE:
        # Any error of a batched call may be another id's (one missing id fails a call that
        # names it): the caller looks each image up first, and asks here only for one still
        # there. Throttled answers do not count (the caller leaves them out of ``failures``).
        if attempts.failures >= options.max_attempts:
            return Failed()
        window = backoff(max(attempts.failures - 1, 0), attempts.jitter, base=base, cap=cap)
        return Retry(max(window, attempts.server_wait))
    if call is Call.POLL:
        if throttled:
            return Retry(attempts.server_wait)  # the items' deadlines still bound the wait
        if isinstance(err, RetryableError) and attempts.failures < options.poll_failures:
            return Retry(0.0)  # the next poll asks again
        return Failed()
    if call is Call.LISTING:
        if isinstance(err, PermanentJobError) or attempts.failures >= options.lookup_attempts:
            return StopRun()
        return Retry(attempts.server_wait + backoff(attempts.failures, attempts.jitter, base=base, cap=cap))
    if call is Call.LOOKUP:
        if throttled:
            if attempts.throttled >= options.throttled_limit:
                return Failed(Status.UNKNOWN)
            window = backoff(min(attempts.throttled, 4), attempts.jitter, base=base / 4, cap=cap)
            return Retry(max(window, attempts.server_wait))
        if isinstance(err, PermanentJobError) or attempts.failures >= options.lookup_attempts:
            return Failed(Status.UNKNOWN)
        return Retry(backoff(attempts.failures - 1, attempts.jitter, base=base, cap=cap))
    # CreateImage
    if isinstance(err, PermanentJobError):
        return Failed(Status.FAILED, reason_for(err))
    if isinstance(err, InstanceBusyError):
        left = options.busy_timeout - attempts.busy_seconds
        if left <= 0:
            return Failed(Status.FAILED, f"instance still busy after {options.busy_timeout:g} s")
        return Retry(min(backoff(attempts.busy_waits, attempts.jitter, base=base, cap=cap), left))
    if throttled:
        window = backoff(min(attempts.throttled, 4), attempts.jitter, base=base / 4, cap=cap)
        return Retry(max(window, attempts.server_wait))  # never before the server's Retry-After
    if attempts.failures >= options.max_attempts:
        plural = "s" if attempts.failures != 1 else ""
        return Failed(Status.FAILED, f"gave up after {attempts.failures} failed attempt{plural}")
    return Retry(backoff(attempts.failures - 1, attempts.jitter, base=base, cap=cap))


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
