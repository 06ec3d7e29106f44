"""The wait step: once CreateImage answered, until the job's image is done.

* A job whose instance this run stopped waits for its image to leave CREATING and its instance
  to leave IMAGING (:meth:`batch.pipeline.power.Lifecycle.settle`), then goes to ``start``.
* ``--wait``: the job waits, on the run's one :class:`~batch.tracking.StatePoller`, for its image
  to be AVAILABLE (or FAILED, gone, out of time).
* Otherwise the job ends as soon as CreateImage answered.

With ``--keep`` (which implies ``--wait``), a job that ends here with an AVAILABLE image goes to
the ``prune`` step first (:func:`batch.pipeline.prune.divert`, asked by the worker loop).
"""

from __future__ import annotations

from ..errors import ApiError, PermanentJobError
from ..models import Status
from ..tracking import FAILED_IMAGE_STATES, Outcome, Resolution
from . import outcome as o
from .context import Context
from .job import JobState

__all__ = ["image_done", "image_made", "on_image", "release_awaited"]


def image_made(ctx: Context, st: JobState, image_id: str, image_status: str, reason: str | None = None) -> o.Outcome:
    """The job has its image (made now, or found by name): end now, or wait for it.

    Args:
        ctx: the run.
        st: the job.
        image_id: the image.
        image_status: its status as last seen.
        reason: a note for the result (how the image was found).
    """
    if image_status in FAILED_IMAGE_STATES:
        # A look-up found the image an earlier attempt made, and it failed: so did the job,
        # as it would have with --wait.
        failure = PermanentJobError(
            "IMAGE_FAILED", f"image {image_id} ended {image_status}", action="DescribeCustomImages"
        )
        st.confirm = None
        return o.End(Status.FAILED, image_id=image_id, image_status=image_status, error=failure, reason=reason)
    st.step = o.Step.WAIT
    if ctx.life is not None and ctx.life.settle(st, image_id, image_status, reason):
        return o.AWAIT  # its instance is started again once the image is done
    if not ctx.options.wait or image_status == "AVAILABLE":
        return image_done(st, image_id, image_status, reason)
    st.awaited_image = (image_id, reason)
    ctx.poller.await_image(st, image_id, ctx.now() + ctx.options.wait_timeout)
    return o.AWAIT


def image_done(st: JobState, image_id: str, image_status: str | None, reason: str | None) -> o.Outcome:
    """The image is done: the job succeeded (with ``--keep``, the worker loop prunes first).

    Args:
        st: the job.
        image_id: the image.
        image_status: its status.
        reason: a note for the result.
    """
    del st  # the ending alone says what the prune needs (an AVAILABLE image)
    return o.End(Status.SUCCEEDED, image_id=image_id, image_status=image_status, reason=reason)


def on_image(ctx: Context, st: JobState, r: Resolution[JobState]) -> o.Outcome:
    """``--wait``: the poller ended the wait for the job's image.

    Args:
        ctx: the run.
        st: the job.
        r: how the wait ended.
    """
    assert st.awaited_image is not None
    image_id, note = st.awaited_image
    st.awaited_image = None
    if r.outcome is Outcome.REACHED:
        return image_done(st, image_id, r.state, note)
    if r.outcome is Outcome.ERROR:
        # The image was made; its state could not be looked up: not final, --resume looks again.
        why = r.error.code if r.error is not None else "look-ups failed"
        return _interrupted(image_id, r.state, note, f"its state could not be looked up ({why})")
    code, text = {
        Outcome.FAILED: ("IMAGE_FAILED", f"image {image_id} ended {r.state}"),
        Outcome.MISSING: ("IMAGE_NOT_FOUND", f"image {image_id} disappeared while CREATING"),
    }.get(
        r.outcome,
        ("WAIT_TIMEOUT", f"image {image_id} still {r.state or 'CREATING'} after {ctx.options.wait_timeout:g} s"),
    )
    failure: ApiError = PermanentJobError(code, text, action="DescribeCustomImages")
    return o.End(Status.FAILED, image_id=image_id, image_status=r.state or "CREATING", error=failure)


def release_awaited(ctx: Context, st: JobState, why: str) -> o.End:
    """End an awaited job without knowing how its image ends (the run is stopping).

    Args:
        ctx: the run.
        st: the job.
        why: why waiting stopped.
    """
    assert st.awaited_image is not None
    image_id, note = st.awaited_image
    st.awaited_image = None
    ctx.poller.forget(st)
    return _interrupted(image_id, "CREATING", note, why)


def _interrupted(image_id: str, status: str | None, note: str | None, why: str) -> o.End:
    # Not final: --resume looks the image up by name and waits for it again.
    reason = f"image created, not yet seen AVAILABLE ({why}); --resume waits for it" + (f"; {note}" if note else "")
    return o.End(Status.INTERRUPTED, image_id=image_id, image_status=status or "CREATING", reason=reason)
