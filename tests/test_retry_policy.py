"""batch.policy.decide: the one retry policy of every call, as a table, without HTTP or a clock."""

from __future__ import annotations

import pytest

from batch.errors import (
    AmbiguousError,
    ApiError,
    AuthenticationError,
    ConnectError,
    FatalRunError,
    InstanceBusyError,
    LostAnswerError,
    PermanentJobError,
    QuotaExceededError,
    ThrottledError,
    TransientServerError,
)
from batch.models import Status
from batch.policy import (
    FATAL_REASON,
    LOOKUP_ATTEMPTS,
    LOOKUP_THROTTLED_LIMIT,
    POWER_TRIES,
    Attempts,
    Call,
    Failed,
    Retry,
    RetryOptions,
    StopRun,
    Verdict,
    backoff,
    decide,
)

LOST = AmbiguousError("NETWORK_ERROR", "connection lost")
LOST_READ = LostAnswerError("NETWORK_ERROR", "connection lost")
BUSY = InstanceBusyError("OPERATION_DENIED_INSTANCE_IN_OPERATION", "busy")
THROTTLED = ThrottledError("REQUEST_LIMIT_EXCEEDED", "slow down")
UNAVAILABLE = TransientServerError("SERVICE_TEMPORARY_UNAVAILABLE", "try later")
REFUSED = ConnectError("NETWORK_ERROR", "cannot connect")
NOT_FOUND = PermanentJobError("INVALID_INSTANCE_NOT_FOUND", "no such instance")
RUNNING = PermanentJobError("OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", "wrong status")
QUOTA = QuotaExceededError("INVALID_IMAGE_QUOTA_EXCEED", "quota")
BAD_SIGNATURE = AuthenticationError("AUTHFAILURE_SIGNATURE_FAILURE", "bad signature")
ODD = ApiError("ODD", "unclassified")
STOP_HINT = "CreateImage needs a STOPPED instance; stop it first, or run with --stop-running (stop, image, start again)"
GAVE_UP = "gave up after 3 failed attempts"

#: --max-attempts 3, --busy-timeout 10, --backoff-base 1, --backoff-cap 60.
OPTIONS = RetryOptions(max_attempts=3, busy_timeout=10, backoff_base=1.0, backoff_cap=60.0, poll_failures=5)


@pytest.mark.parametrize(
    ("call", "err", "attempts", "expected"),
    [
        # CreateImage: a write, --max-attempts, busy until --busy-timeout, fatal stops the run.
        pytest.param(Call.CREATE, LOST, Attempts(failures=1, jitter=0.5), Retry(0.5), id="create-lost-retries"),
        pytest.param(Call.CREATE, LOST, Attempts(failures=3), Failed(Status.FAILED, GAVE_UP), id="create-lost-last"),
        pytest.param(Call.CREATE, UNAVAILABLE, Attempts(failures=2, jitter=0.5), Retry(1.0), id="create-5xx-doubles"),
        pytest.param(Call.CREATE, REFUSED, Attempts(failures=3), Failed(Status.FAILED, GAVE_UP), id="create-5xx-last"),
        pytest.param(
            Call.CREATE, BUSY, Attempts(busy_seconds=5, busy_waits=2, jitter=1.0), Retry(4.0), id="create-busy-retries"
        ),
        pytest.param(
            Call.CREATE,
            BUSY,
            Attempts(busy_seconds=9, busy_waits=5, jitter=1.0),
            Retry(1.0),
            id="create-busy-wait-cut-at-timeout",
        ),
        pytest.param(
            Call.CREATE,
            BUSY,
            Attempts(busy_seconds=10),
            Failed(Status.FAILED, "instance still busy after 10 s"),
            id="create-busy-too-long",
        ),
        pytest.param(
            Call.CREATE, THROTTLED, Attempts(failures=99, throttled=1, jitter=1.0), Retry(0.5), id="create-429-retries"
        ),
        pytest.param(
            Call.CREATE,
            THROTTLED,
            Attempts(throttled=1, server_wait=7.0, jitter=1.0),
            Retry(7.0),
            id="create-429-not-before-retry-after",
        ),
        pytest.param(Call.CREATE, NOT_FOUND, Attempts(), Failed(Status.FAILED, None), id="create-permanent-ends"),
        pytest.param(Call.CREATE, RUNNING, Attempts(), Failed(Status.FAILED, STOP_HINT), id="create-running-hint"),
        pytest.param(
            Call.CREATE, QUOTA, Attempts(), StopRun(Status.INTERRUPTED, FATAL_REASON), id="create-quota-stops"
        ),
        pytest.param(
            Call.CREATE, BAD_SIGNATURE, Attempts(), StopRun(Status.INTERRUPTED, FATAL_REASON), id="create-auth-stops"
        ),
        # A look-up by name: a read with its own budget; giving up means unknown.
        pytest.param(Call.LOOKUP, UNAVAILABLE, Attempts(failures=1, jitter=0.5), Retry(0.5), id="lookup-5xx-retries"),
        pytest.param(
            Call.LOOKUP, LOST_READ, Attempts(failures=LOOKUP_ATTEMPTS - 1), Retry(0.0), id="lookup-within-budget"
        ),
        pytest.param(
            Call.LOOKUP, LOST_READ, Attempts(failures=LOOKUP_ATTEMPTS), Failed(Status.UNKNOWN), id="lookup-budget-spent"
        ),
        pytest.param(
            Call.LOOKUP,
            THROTTLED,
            Attempts(failures=LOOKUP_ATTEMPTS + 5, throttled=1, server_wait=3.0),
            Retry(3.0),
            id="lookup-429-not-a-failure",
        ),
        pytest.param(
            Call.LOOKUP,
            THROTTLED,
            Attempts(throttled=LOOKUP_THROTTLED_LIMIT),
            Failed(Status.UNKNOWN),
            id="lookup-429-bounded",
        ),
        pytest.param(Call.LOOKUP, NOT_FOUND, Attempts(failures=1), Failed(Status.UNKNOWN), id="lookup-permanent"),
        pytest.param(Call.LOOKUP, BAD_SIGNATURE, Attempts(failures=1), StopRun(Status.UNKNOWN), id="lookup-auth-stops"),
        # The starting listing: a read; when it cannot finish, the run stops.
        pytest.param(Call.LISTING, UNAVAILABLE, Attempts(failures=1, jitter=0.5), Retry(1.0), id="listing-5xx-retries"),
        pytest.param(
            Call.LISTING,
            THROTTLED,
            Attempts(failures=1, server_wait=2.0, jitter=0.0),
            Retry(2.0),
            id="listing-429-waits-retry-after",
        ),
        pytest.param(Call.LISTING, LOST_READ, Attempts(failures=LOOKUP_ATTEMPTS), StopRun(), id="listing-budget-stops"),
        pytest.param(Call.LISTING, NOT_FOUND, Attempts(failures=1), StopRun(), id="listing-permanent-stops"),
        pytest.param(Call.LISTING, QUOTA, Attempts(failures=1), StopRun(), id="listing-fatal-stops"),
        # The state poller: per item, failed polls in a row.
        pytest.param(Call.POLL, BAD_SIGNATURE, Attempts(failures=1), StopRun(), id="poll-auth-fatal"),
        pytest.param(Call.POLL, QUOTA, Attempts(failures=1), StopRun(), id="poll-quota-fatal"),
        pytest.param(Call.POLL, FatalRunError("TLS_ERROR", "x"), Attempts(failures=9), StopRun(), id="poll-fatal-any"),
        pytest.param(Call.POLL, THROTTLED, Attempts(failures=100, server_wait=2), Retry(2.0), id="poll-429-never-ends"),
        pytest.param(Call.POLL, UNAVAILABLE, Attempts(failures=1), Retry(0.0), id="poll-5xx-retries"),
        pytest.param(Call.POLL, UNAVAILABLE, Attempts(failures=4), Retry(0.0), id="poll-5xx-below-limit"),
        pytest.param(Call.POLL, UNAVAILABLE, Attempts(failures=5), Failed(), id="poll-5xx-at-limit"),
        pytest.param(Call.POLL, LOST_READ, Attempts(failures=2), Retry(0.0), id="poll-lost-answer-retries"),
        pytest.param(Call.POLL, NOT_FOUND, Attempts(failures=1), Failed(), id="poll-permanent-at-once"),
        pytest.param(Call.POLL, ODD, Attempts(failures=1), Failed(), id="poll-unclassified-gives-up"),
        # StopInstances / StartInstances for one id: a few tries, a plain doubling back-off.
        pytest.param(Call.POWER, ODD, Attempts(failures=1), Retry(1.0), id="power-first-retry"),
        pytest.param(Call.POWER, ODD, Attempts(failures=3), Retry(4.0), id="power-doubles"),
        pytest.param(Call.POWER, ODD, Attempts(failures=POWER_TRIES), Failed(), id="power-tries-spent"),
        pytest.param(Call.POWER, BAD_SIGNATURE, Attempts(failures=1), StopRun(), id="power-fatal-stops"),
    ],
)
def test_decide(call: Call, err: ApiError, attempts: Attempts, expected: Verdict) -> None:
    """Each error of each call leads to the verdict the table gives."""
    assert decide(err, attempts, OPTIONS, call=call) == expected


def test_look_up_budget_is_independent_of_max_attempts() -> None:
    """The look-up budget is its own: a CreateImage with --max-attempts 1 still gets every look-up."""
    strict = RetryOptions(max_attempts=1)
    assert isinstance(decide(LOST, Attempts(failures=1), strict, call=Call.CREATE), Failed)
    assert isinstance(decide(LOST_READ, Attempts(failures=1), strict, call=Call.LOOKUP), Retry)


@pytest.mark.parametrize(
    ("attempt", "jitter", "seconds"),
    [
        pytest.param(0, 1.0, 1.0, id="first-window"),
        pytest.param(3, 1.0, 8.0, id="doubled-three-times"),
        pytest.param(3, 0.25, 2.0, id="jitter-scales"),
        pytest.param(10, 1.0, 60.0, id="capped"),
        pytest.param(10_000, 1.0, 60.0, id="huge-attempt-capped"),
        pytest.param(-1, 1.0, 1.0, id="negative-attempt-is-first"),
    ],
)
def test_backoff_is_full_jitter_capped(attempt: int, jitter: float, seconds: float) -> None:
    """The back-off is the jitter draw times the window, which doubles per wait up to --backoff-cap."""
    assert backoff(attempt, jitter, base=1.0, cap=60.0) == seconds
