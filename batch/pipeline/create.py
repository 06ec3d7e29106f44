"""The name rule and the create step: CreateImage with every rule of a plain run.

* the name rule (:func:`first_look`, the job's first decision, as ``imagebatch plan`` makes it
  with :func:`batch.plan.name_taken`): an image by the job's name skips the job, or, for a job an
  earlier process of this run may have created, adopts it;
* before a CreateImage that may repeat an applied one (an answer lost, a resumed run), a
  look-up by name;
* a failed CreateImage is retried or ends the job, as :func:`batch.policy.decide` says; a job
  that would end without an image although one may exist is looked up by name first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import ApiError, InstanceBusyError, ThrottledError
from ..events import RETRY_SCHEDULED
from ..models import Status
from ..ownership import ownership_tags
from ..plan import name_taken
from ..policy import (
    OUTCOME_UNKNOWN,
    Attempts,
    Call,
    Retry,
    StopRun,
    Verdict,
    counts_as_failure,
    decide,
    lookup_failed,
    lookup_timeout,
    needs_look_up,
    unknown_message,
)
from ..scheduling import full_jitter
from . import outcome as o
from .context import Context
from .job import JobState
from .wait import image_made

__all__ = [
    "ADOPTED_LOST",
    "ADOPTED_RESUMED",
    "create_step",
    "end_not_found",
    "end_unknown",
    "first_look",
    "image_tags",
    "look_up",
    "lookup_verdict",
]

ADOPTED_LOST = "adopted: an earlier attempt created it but its answer was lost"
ADOPTED_RESUMED = "adopted: created by an earlier, interrupted attempt of this run"


def first_look(ctx: Context, st: JobState) -> o.Outcome | None:
    """The job's first decision, before any call: the name rule. ``None``: go on.

    (Issue 11's halt check before a job starts belongs here, before the name rule.)

    Args:
        ctx: the run.
        st: the job.
    """
    existing = ctx.existing.get(st.job.image_name)
    if not name_taken(existing):
        return None
    assert existing is not None
    image_id, image_status = existing
    if st.resumed_intent:
        # An earlier process of this run sent its CreateImage: the image is the job's own.
        if st.power is not None and ctx.ledger is not None:
            st.power.carry_restore(st.job.instance_id, ctx.ledger)
        return image_made(ctx, st, image_id, image_status, ADOPTED_RESUMED)
    reason = f"an image named {st.job.image_name!r} already exists ({image_status})"
    return o.End(Status.SKIPPED, image_id=image_id, image_status=image_status, reason=reason)


async def create_step(ctx: Context, st: JobState) -> o.Outcome:
    """Look the image up by name if an earlier CreateImage may have been applied, else send one.

    Args:
        ctx: the run.
        st: the job.
    """
    job = st.job
    if st.reconcile or st.confirm is not None:
        if ctx.now() < st.look_after and not ctx.stopping():
            return o.Retry(st.look_after)  # too soon: a new image may not be listed yet
        try:
            found = await look_up(ctx, st)
        except ApiError as err:
            return _lookup_error(ctx, st, err)
        if found is not None:
            st.confirm = None
            return image_made(ctx, st, found[0], found[1], ADOPTED_LOST)
        if st.confirm is not None:
            return end_not_found(st, st.confirm)
    if ctx.stopping():
        # The run is stopping: send nothing new. Given back, the job is settled by a worker
        # (after a fatal error) or left to --resume (after a signal or a changed job list).
        return o.Retry(ctx.now())
    try:
        if not st.intent_written:
            await ctx.writer.intent(job)
            st.intent_written = True
        st.image_tags = image_tags(ctx, st)
        created = await ctx.client.create_image(
            job.instance_id, job.image_name, resource_group_id=job.resource_group_id, tags=st.image_tags
        )
    except ApiError as err:
        return create_failed(ctx, st, err)
    return image_made(ctx, st, created.image_id, "CREATING")


def image_tags(ctx: Context, st: JobState) -> tuple[tuple[str, str], ...]:
    """The tags of the job's CreateImage: its own, then the four ownership tags (policy, instance,
    this moment in UTC, run), which retention goes by.

    Args:
        ctx: the run.
        st: the job.
    """
    created = datetime.fromtimestamp(ctx.clock.wall(), UTC)
    return (*st.job.tags, *ownership_tags(ctx.options.policy, st.job.instance_id, created, ctx.run_id))


async def _find_by_name(ctx: Context, name: str, *, request_timeout: float | None) -> tuple[str, str] | None:
    async for image in ctx.client.describe_custom_images(
        image_name=name, page_size=100, request_timeout=request_timeout
    ):
        if image.get("imageName") == name and image.get("imageStatus") != "DELETING":
            return str(image.get("imageId")), str(image.get("imageStatus"))
    return None


async def look_up(ctx: Context, st: JobState) -> tuple[str, str] | None:
    """Look the job's image up by name; each failed look-up gives the next one longer to answer.

    Args:
        ctx: the run.
        st: the job.
    """
    timeout = lookup_timeout(ctx.options.total_timeout, st.lookup_failures)
    found = await _find_by_name(ctx, st.job.image_name, request_timeout=timeout)
    st.reconcile, st.lookup_failures, st.lookup_throttled = False, 0, 0
    return found


def lookup_verdict(ctx: Context, st: JobState, err: ApiError) -> Verdict:
    """Count a failed look-up; return what comes next (a retry carries its back-off).

    Args:
        ctx: the run.
        st: the job.
        err: how the look-up failed.
    """
    st.note_request(err.request_id)
    if isinstance(err, ThrottledError):
        st.lookup_throttled += 1
        st.throttled += 1
        ctx.meter.throttle.on_throttled()
    else:
        st.lookup_failures += 1
    attempts = Attempts(
        failures=st.lookup_failures,
        throttled=st.lookup_throttled,
        server_wait=err.retry_after or 0.0,
        jitter=ctx.rng.random(),
    )
    verdict = decide(err, attempts, ctx.retry, call=Call.LOOKUP)
    if isinstance(verdict, StopRun):
        ctx.lookups_off = True
    elif isinstance(verdict, Retry):
        ctx.log.info(
            RETRY_SCHEDULED,
            instanceId=st.job.instance_id,
            code=err.code,
            backoffSeconds=round(verdict.delay, 3),
            step="look-up",
        )
    return verdict


def _lookup_error(ctx: Context, st: JobState, err: ApiError) -> o.Outcome:
    """A look-up by name failed: look again later, or end the job ``unknown``."""
    verdict = lookup_verdict(ctx, st, err)
    if isinstance(verdict, Retry):
        return o.Retry(ctx.now() + verdict.delay)
    ending = end_unknown(st, lookup_failed(err, st.lookup_failures))
    return o.StopRun(err, ending) if isinstance(verdict, StopRun) else ending


def end_unknown(st: JobState, why: str) -> o.End:
    """End a job ``unknown``: its CreateImage may have been applied and no look-up could tell.

    Args:
        st: the job.
        why: what kept the look-up from answering.
    """
    error = ApiError(OUTCOME_UNKNOWN, unknown_message(st.job.image_name, why), action="DescribeCustomImages")
    return o.End(Status.UNKNOWN, error=error, reason="the image may exist; --resume looks it up again")


def end_not_found(st: JobState, ending: o.End) -> o.End:
    """End a job as planned, now that a look-up by name found no image of it.

    Args:
        st: the job.
        ending: how the job was to end.
    """
    st.confirm = None
    note = f"a look-up by name found no image {st.job.image_name!r}"
    reason = f"{ending.reason}; {note}" if ending.reason else note
    return o.End(ending.status, error=ending.error, reason=reason)


def create_failed(ctx: Context, st: JobState, err: ApiError) -> o.Outcome:
    """CreateImage failed: retry later, or end the job (the run too, on a fatal error).

    Args:
        ctx: the run.
        st: the job.
        err: how CreateImage failed.
    """
    now = ctx.now()
    st.note_request(err.request_id)
    if err.may_have_committed:
        st.reconcile = st.maybe_created = True
        st.look_after = now + ctx.options.lookup_delay
    if counts_as_failure(err):
        st.failures += 1
    busy_seconds = 0.0
    if isinstance(err, InstanceBusyError):
        if st.maybe_created:
            # Busy may mean IMAGING for our own image whose answer was lost and which the
            # look-up did not list yet: look again before the next CreateImage.
            st.reconcile = True
        st.first_busy_at = st.first_busy_at or now
        busy_seconds = now - st.first_busy_at
    wait = 0.0
    if isinstance(err, ThrottledError):
        wait = ctx.meter.on_throttled(err.retry_after)
        st.throttled += 1
    attempts = Attempts(
        failures=st.failures,
        throttled=st.throttled,
        busy_seconds=busy_seconds,
        busy_waits=st.busy_waits,
        server_wait=wait,
        jitter=ctx.rng.random(),
    )
    verdict = decide(err, attempts, ctx.retry, call=Call.CREATE)
    if not isinstance(verdict, Retry):
        ending = end_after_look_up(ctx, st, o.End(verdict.status, error=err, reason=verdict.reason))
        return o.StopRun(err, ending) if isinstance(verdict, StopRun) else ending
    if isinstance(err, InstanceBusyError):
        st.busy_waits += 1
    ctx.retries += 1
    ctx.log.info(
        RETRY_SCHEDULED,
        instanceId=st.job.instance_id,
        code=err.code,
        backoffSeconds=round(verdict.delay, 3),
        reconcile=st.reconcile,
    )
    return o.Retry(now + verdict.delay)


def end_after_look_up(ctx: Context, st: JobState, ending: o.End) -> o.Outcome:
    """End a job, after a look-up by name if its CreateImage may have been applied.

    Args:
        ctx: the run.
        st: the job.
        ending: how it ends if no image of it is found.
    """
    if not needs_look_up(ending.status, maybe_created=st.maybe_created):
        return ending
    st.confirm = ending
    # A short back-off first: an image created a moment ago may not be listed yet.
    opts = ctx.options
    delay = full_jitter(0, base=opts.backoff_base, cap=opts.backoff_cap, rng=ctx.rng)
    delay = max(delay, st.look_after - ctx.now())
    ctx.log.info(
        RETRY_SCHEDULED,
        instanceId=st.job.instance_id,
        code=ending.error.code if ending.error else None,
        backoffSeconds=round(delay, 3),
        step="look-up before ending",
    )
    return o.Retry(ctx.now() + delay)
