"""The pure helpers of batch.policy: what counts as a failure, when a job must look first, look-up
timeouts and messages (the retry decision itself: tests/test_retry_policy.py)."""

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
