"""The wait step's outcomes: when a job ends on its image, and how an awaited image ends it."""

from __future__ import annotations

import pytest

from batch.models import Status
from batch.pipeline import outcome as o
from batch.pipeline.wait import image_made, on_image, release_awaited
from batch.tracking import Kind, Outcome, Resolution

from ._steps_helpers import FakeClock, job_state, make_context


@pytest.mark.parametrize(
    ("wait", "status", "expected"),
    [
        pytest.param(False, "CREATING", Status.SUCCEEDED, id="no-wait-ends-at-once"),
        pytest.param(True, "AVAILABLE", Status.SUCCEEDED, id="wait-already-available"),
        pytest.param(True, "FAILED", Status.FAILED, id="found-failed-fails"),
        pytest.param(False, "UNAVAILABLE", Status.FAILED, id="found-unavailable-fails"),
        pytest.param(True, "CREATING", None, id="wait-awaits"),
    ],
)
def test_image_made(wait: bool, status: str, expected: Status | None) -> None:
    """CreateImage answered: the job ends now, fails on a failed image, or awaits it on the poller."""
    clock = FakeClock()
    ctx = make_context(clock, wait=wait, wait_timeout=60.0)
    st = job_state()
    out = image_made(ctx, st, "im-1", status)
    if expected is None:
        assert isinstance(out, o.Await)
        assert ctx.poller.awaited_images == 1
        assert st.awaited_image == ("im-1", None)
        return
    assert isinstance(out, o.End)
    assert out.status is expected
    assert ctx.poller.awaited_images == 0


@pytest.mark.parametrize(
    ("outcome", "state", "status", "code"),
    [
        pytest.param(Outcome.REACHED, "AVAILABLE", Status.SUCCEEDED, None, id="available"),
        pytest.param(Outcome.FAILED, "FAILED", Status.FAILED, "IMAGE_FAILED", id="failed"),
        pytest.param(Outcome.MISSING, "CREATING", Status.FAILED, "IMAGE_NOT_FOUND", id="missing"),
        pytest.param(Outcome.TIMEOUT, "CREATING", Status.FAILED, "WAIT_TIMEOUT", id="timeout"),
        pytest.param(Outcome.ERROR, None, Status.INTERRUPTED, None, id="lookups-failed-not-final"),
    ],
)
def test_on_image(outcome: Outcome, state: str | None, status: Status, code: str | None) -> None:
    """How the poller ended an image wait decides how the job ends."""
    ctx = make_context(FakeClock(), wait=True)
    st = job_state(awaited_image=("im-1", "note"))
    out = on_image(ctx, st, Resolution(st, Kind.IMAGE, "im-1", outcome, state))
    assert isinstance(out, o.End)
    assert out.status is status
    assert (out.error.code if out.error else None) == code
    assert out.image_id == "im-1"
    assert st.awaited_image is None


def test_release_awaited_is_interrupted_and_forgets_the_wait() -> None:
    """When the run stops on an error, an awaited image's job is interrupted for --resume."""
    clock = FakeClock()
    ctx = make_context(clock, wait=True)
    st = job_state()
    assert isinstance(image_made(ctx, st, "im-1", "CREATING"), o.Await)
    out = release_awaited(ctx, st, "waiting stopped: QUOTA")
    assert out.status is Status.INTERRUPTED
    assert "--resume waits for it" in (out.reason or "")
    assert ctx.poller.awaited_images == 0
