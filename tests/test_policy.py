"""The pure decisions of batch.policy: what a job does after an error, and when it must look first."""

from __future__ import annotations

import pytest

from batch.errors import (
    AmbiguousError,
    ApiError,
    AuthenticationError,
    ConnectError,
    InstanceBusyError,
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
    Decision,
    Next,
    after_create_error,
    after_lookup_error,
    counts_as_failure,
    lookup_failed,
    lookup_timeout,
    lookups_possible_after,
    needs_look_up,
    unknown_message,
)

LOST = AmbiguousError("NETWORK_ERROR", "connection lost")
BUSY = InstanceBusyError("OPERATION_DENIED_INSTANCE_IN_OPERATION", "busy")
THROTTLED = ThrottledError("REQUEST_LIMIT_EXCEEDED", "slow down")
UNAVAILABLE = TransientServerError("SERVICE_TEMPORARY_UNAVAILABLE", "try later")
REFUSED = ConnectError("NETWORK_ERROR", "cannot connect")
NOT_FOUND = PermanentJobError("INVALID_INSTANCE_NOT_FOUND", "no such instance")
RUNNING = PermanentJobError("OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", "wrong status")
QUOTA = QuotaExceededError("INVALID_IMAGE_QUOTA_EXCEED", "quota")
BAD_SIGNATURE = AuthenticationError("AUTHFAILURE_SIGNATURE_FAILURE", "bad signature")
NO_PERMISSION = AuthenticationError("AUTHFAILURE_UNAUTHORIZED_OPERATION", "not allowed")
STOP_HINT = "CreateImage needs a STOPPED instance; stop it first, or run with --stop-running (stop, image, start again)"


@pytest.mark.parametrize(
    ("err", "failures", "busy_seconds", "expected"),
    [
        pytest.param(LOST, 1, 0.0, Decision(Next.RETRY), id="lost-answer-retries"),
        pytest.param(
            LOST, 3, 0.0, Decision(Next.END, Status.FAILED, "gave up after 3 failed attempts"), id="lost-answer-last"
        ),
        pytest.param(UNAVAILABLE, 2, 0.0, Decision(Next.RETRY), id="5xx-retries"),
        pytest.param(
            REFUSED, 3, 0.0, Decision(Next.END, Status.FAILED, "gave up after 3 failed attempts"), id="5xx-last"
        ),
        pytest.param(BUSY, 0, 5.0, Decision(Next.RETRY), id="busy-retries"),
        pytest.param(
            BUSY, 0, 10.0, Decision(Next.END, Status.FAILED, "instance still busy after 10 s"), id="busy-too-long"
        ),
        pytest.param(THROTTLED, 99, 0.0, Decision(Next.RETRY), id="throttled-always-retries"),
        pytest.param(NOT_FOUND, 0, 0.0, Decision(Next.END, Status.FAILED, None), id="permanent-ends"),
        pytest.param(RUNNING, 0, 0.0, Decision(Next.END, Status.FAILED, STOP_HINT), id="running-instance-hint"),
        pytest.param(
            QUOTA, 0, 0.0, Decision(Next.STOP_RUN, Status.INTERRUPTED, FATAL_REASON), id="quota-stops"
        ),
        pytest.param(
            BAD_SIGNATURE,
            0,
            0.0,
            Decision(Next.STOP_RUN, Status.INTERRUPTED, FATAL_REASON),
            id="auth-stops",
        ),
    ],
)
def test_after_create_error(err: ApiError, failures: int, busy_seconds: float, expected: Decision) -> None:
    """Each CreateImage error leads to the step the table gives (with --max-attempts 3, --busy-timeout 10)."""
    decision = after_create_error(err, failures=failures, max_attempts=3, busy_seconds=busy_seconds, busy_timeout=10)
    assert decision == expected


@pytest.mark.parametrize(
    ("err", "failures", "expected"),
    [
        pytest.param(UNAVAILABLE, 1, Next.RETRY, id="5xx-retries"),
        pytest.param(LOST, LOOKUP_ATTEMPTS - 1, Next.RETRY, id="timeout-retries-within-budget"),
        pytest.param(LOST, LOOKUP_ATTEMPTS, Next.END, id="budget-spent-ends"),
        pytest.param(THROTTLED, LOOKUP_ATTEMPTS + 5, Next.RETRY, id="throttled-not-counted-as-failure"),
        pytest.param(NOT_FOUND, 1, Next.END, id="permanent-ends"),
        pytest.param(BAD_SIGNATURE, 1, Next.STOP_RUN, id="auth-stops"),
    ],
)
def test_after_lookup_error(err: ApiError, failures: int, expected: Next) -> None:
    """A failed look-up is retried within its own budget; giving up always means `unknown`."""
    decision = after_lookup_error(err, failures=failures)
    assert decision.next is expected
    assert decision.status is (None if expected is Next.RETRY else Status.UNKNOWN)


@pytest.mark.parametrize(
    ("throttled", "expected"),
    [
        pytest.param(1, Next.RETRY, id="first-429"),
        pytest.param(LOOKUP_THROTTLED_LIMIT - 1, Next.RETRY, id="below-limit"),
        pytest.param(LOOKUP_THROTTLED_LIMIT, Next.END, id="limit-reached"),
    ],
)
def test_throttled_look_ups_are_bounded(throttled: int, expected: Next) -> None:
    """429s do not use up the look-up budget, but a job cannot wait on them forever (a stop must end)."""
    assert after_lookup_error(THROTTLED, failures=0, throttled=throttled).next is expected


def test_look_up_budget_is_independent_of_max_attempts() -> None:
    """The look-up budget is its own: a CreateImage with --max-attempts 1 still gets every look-up."""
    assert after_create_error(LOST, failures=1, max_attempts=1, busy_seconds=0, busy_timeout=10).next is Next.END
    assert after_lookup_error(LOST, failures=1).next is Next.RETRY


@pytest.mark.parametrize(
    ("err", "counts"),
    [
        pytest.param(LOST, True, id="lost"),
        pytest.param(UNAVAILABLE, True, id="5xx"),
        pytest.param(REFUSED, True, id="connect"),
        pytest.param(BUSY, False, id="busy"),
        pytest.param(THROTTLED, False, id="throttled"),
        pytest.param(NOT_FOUND, False, id="permanent"),
        pytest.param(QUOTA, False, id="fatal"),
    ],
)
def test_counts_as_failure(err: ApiError, counts: bool) -> None:
    """Only errors worth retrying that have no limit of their own use up --max-attempts."""
    assert counts_as_failure(err) is counts


@pytest.mark.parametrize(
    ("status", "maybe_created", "look"),
    [
        pytest.param(Status.FAILED, True, True, id="failed-maybe-created"),
        pytest.param(Status.SKIPPED, True, True, id="skipped-maybe-created"),
        pytest.param(Status.INTERRUPTED, True, True, id="interrupted-maybe-created"),
        pytest.param(Status.FAILED, False, False, id="failed-never-sent-ambiguously"),
        pytest.param(Status.SUCCEEDED, True, False, id="succeeded"),
        pytest.param(Status.UNKNOWN, True, False, id="unknown-is-the-answer-when-looking-fails"),
    ],
)
def test_needs_look_up(status: Status, maybe_created: bool, look: bool) -> None:
    """A job whose CreateImage may have been applied is looked up before it ends without an image."""
    assert needs_look_up(status, maybe_created=maybe_created) is look


@pytest.mark.parametrize(
    ("total", "failures", "seconds"),
    [
        pytest.param(2.0, 0, 2.0, id="first-try"),
        pytest.param(2.0, 1, 4.0, id="doubled"),
        pytest.param(2.0, 5, 64.0, id="doubled-five-times"),
        pytest.param(2.0, 50, 120.0, id="capped"),
        pytest.param(60.0, 2, 120.0, id="default-timeout-capped"),
        pytest.param(300.0, 3, 300.0, id="longer-timeout-kept"),
    ],
)
def test_lookup_timeout_grows_and_is_capped(total: float, failures: int, seconds: float) -> None:
    """Each failed look-up doubles the next one's time to answer, up to 120 s (or --timeout if longer)."""
    assert lookup_timeout(total, failures) == seconds


@pytest.mark.parametrize(
    ("fatal", "possible"),
    [
        pytest.param(BAD_SIGNATURE, False, id="refused-key"),
        pytest.param(NO_PERMISSION, True, id="refused-permission"),
        pytest.param(QUOTA, True, id="quota"),
    ],
)
def test_lookups_possible_after(fatal: ApiError, possible: bool) -> None:
    """After refused credentials no look-up is sent; after a quota stop or a refused permission, they are."""
    assert lookups_possible_after(fatal) is possible


def test_unknown_message_says_the_image_may_exist_and_resume_looks_again() -> None:
    """The OUTCOME_UNKNOWN message names the image, says it may exist, why, and what --resume does."""
    text = unknown_message("web-1", lookup_failed(UNAVAILABLE, 6))
    assert text == (
        "CreateImage may have been applied, so image 'web-1' may exist; the look-up by name failed "
        "(6 attempt(s), last SERVICE_TEMPORARY_UNAVAILABLE: 'try later'); --resume looks it up again"
    )


def test_unknown_message_clips_a_huge_api_message() -> None:
    """A 1 MB API message does not become a 1 MB result line."""
    text = lookup_failed(TransientServerError("SERVICE_TEMPORARY_UNAVAILABLE", "x" * 1_000_000), 1)
    assert len(text) < 200
    assert "(1000000 bytes)" in text
