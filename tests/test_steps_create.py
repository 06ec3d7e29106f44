"""The name rule and the create step's outcomes, without HTTP, on a fake clock."""

from __future__ import annotations

import pytest

from batch.errors import (
    AmbiguousError,
    ApiError,
    InstanceBusyError,
    PermanentJobError,
    QuotaExceededError,
    ThrottledError,
)
from batch.models import Status
from batch.pipeline import outcome as o
from batch.pipeline.create import ADOPTED_RESUMED, create_failed, end_after_look_up, end_not_found, first_look

from ._steps_helpers import FakeClock, job_state, make_context


@pytest.mark.parametrize(
    ("existing", "resumed", "expected"),
    [
        pytest.param(None, False, None, id="no-image-goes-on"),
        pytest.param(("im-9", "AVAILABLE"), False, Status.SKIPPED, id="name-taken-skips"),
        pytest.param(("im-9", "CREATING"), False, Status.SKIPPED, id="name-creating-skips"),
        pytest.param(("im-9", "FAILED"), False, None, id="failed-image-does-not-take-the-name"),
        pytest.param(("im-9", "AVAILABLE"), True, Status.SUCCEEDED, id="resumed-adopts"),
    ],
)
def test_first_look_applies_the_plans_name_rule(
    existing: tuple[str, str] | None, resumed: bool, expected: Status | None
) -> None:
    """The first decision skips (or, for a job an earlier process sent, adopts) by plan's name_taken."""
    clock = FakeClock()
    ctx = make_context(clock)
    if existing is not None:
        ctx.existing["img-1"] = existing
    st = job_state(resumed_intent=resumed)
    out = first_look(ctx, st)
    if expected is None:
        assert out is None
        return
    assert isinstance(out, o.End)
    assert out.status is expected
    assert out.image_id == "im-9"
    if resumed:
        assert out.reason == ADOPTED_RESUMED


@pytest.mark.parametrize(
    ("err", "failures_before", "kind"),
    [
        pytest.param(ThrottledError("REQUEST_LIMIT_EXCEEDED", "slow"), 0, o.Retry, id="throttled-retries"),
        pytest.param(
            InstanceBusyError("OPERATION_DENIED_INSTANCE_IN_OPERATION", "busy"), 0, o.Retry, id="busy-retries"
        ),
        pytest.param(PermanentJobError("INVALID_INSTANCE_NOT_FOUND", "gone"), 0, o.End, id="permanent-fails"),
        pytest.param(QuotaExceededError("INVALID_IMAGE_QUOTA_EXCEED", "quota"), 0, o.StopRun, id="quota-stops-run"),
        pytest.param(AmbiguousError("NETWORK_ERROR", "lost"), 0, o.Retry, id="lost-answer-retries"),
    ],
)
def test_create_failed_outcome(err: ApiError, failures_before: int, kind: type) -> None:
    """A failed CreateImage becomes a retry at a later time, an ending, or a stop of the run."""
    clock = FakeClock()
    ctx = make_context(clock, max_attempts=3)
    st = job_state(failures=failures_before)
    out = create_failed(ctx, st, err)
    assert isinstance(out, kind)
    if isinstance(out, o.Retry):
        assert out.at >= clock.now
    if isinstance(out, o.End):
        assert out.status is Status.FAILED
        assert out.error is err


def test_lost_answer_then_budget_spent_looks_up_before_ending() -> None:
    """A CreateImage whose answer was lost, out of attempts, is looked up by name before it ends."""
    clock = FakeClock()
    ctx = make_context(clock, max_attempts=1, lookup_delay=10.0)
    st = job_state()
    out = create_failed(ctx, st, AmbiguousError("NETWORK_ERROR", "lost"))
    assert isinstance(out, o.Retry)
    assert out.at >= clock.now + 10.0  # not before --lookup-delay: the image may be listed late
    assert st.reconcile
    assert st.maybe_created
    assert st.confirm is not None
    assert st.confirm.status is Status.FAILED


def test_stop_run_from_quota_ends_the_job_after_a_look_up_when_it_may_exist() -> None:
    """A fatal error stops the run; a job whose image may exist is then looked up, not ended blind."""
    clock = FakeClock()
    ctx = make_context(clock)
    st = job_state(maybe_created=True)
    out = create_failed(ctx, st, QuotaExceededError("INVALID_IMAGE_QUOTA_EXCEED", "quota"))
    assert isinstance(out, o.StopRun)
    assert isinstance(out.then, o.Retry)
    assert st.confirm is not None


def test_end_after_look_up_ends_at_once_when_nothing_was_sent() -> None:
    """A job whose CreateImage was never applied ends as planned, with no look-up."""
    ctx = make_context(FakeClock())
    ending = o.End(Status.FAILED, reason="why")
    assert end_after_look_up(ctx, job_state(), ending) is ending


def test_end_not_found_names_the_look_up() -> None:
    """An ending confirmed by a look-up that found nothing says so in its reason."""
    st = job_state(confirm=o.End(Status.FAILED, reason="gave up"))
    out = end_not_found(st, o.End(Status.FAILED, reason="gave up"))
    assert out.reason == "gave up; a look-up by name found no image 'img-1'"
    assert st.confirm is None
