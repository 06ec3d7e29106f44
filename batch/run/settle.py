"""After a fatal error: end the jobs given back for a retry, looking up those that may exist.

Those whose CreateImage may have been applied are looked up by name first; the workers share
the list as they leave, so the look-ups run side by side.
"""

from __future__ import annotations

import anyio

from ..errors import ApiError
from ..models import Status
from ..pipeline.context import Context
from ..pipeline.create import ADOPTED_LOST, end_not_found, end_unknown, look_up, lookup_verdict
from ..pipeline.job import JobState
from ..pipeline.outcome import End
from ..policy import Retry, lookup_failed

__all__ = ["end_waiting", "settle_one"]

NO_LOOK_UP = "the run stopped before a look-up by name could be sent"


async def settle_one(ctx: Context, st: JobState, stop_note: str) -> End:
    """How a job that is not in flight ends, once the run has stopped on a fatal error.

    Args:
        ctx: the run.
        st: the job.
        stop_note: why the run stopped, for the result.
    """
    ending = st.confirm or End(Status.INTERRUPTED, reason=stop_note)
    if not (st.reconcile or st.confirm is not None):
        return ending  # nothing sent since the last look-up that answered: nothing to look for
    why = NO_LOOK_UP
    await anyio.sleep(max(0.0, st.look_after - ctx.now()))  # a new image may be listed late
    while not ctx.lookups_off:
        try:
            found = await look_up(ctx, st)
        except ApiError as err:
            verdict = lookup_verdict(ctx, st, err)
            why = lookup_failed(err, st.lookup_failures)
            if not isinstance(verdict, Retry):
                break
            await anyio.sleep(verdict.delay)  # nothing else is left to do while the run stops
            continue
        if found is None:
            return end_not_found(st, ending)
        image_id, image_status = found
        reason = ADOPTED_LOST
        if ctx.options.wait and image_status != "AVAILABLE":
            # Not final: --resume finds it again by name and waits for it.
            reason += f"; not yet seen AVAILABLE ({stop_note}); --resume waits for it"
            return End(Status.INTERRUPTED, image_id=image_id, image_status=image_status, reason=reason)
        return End(Status.SUCCEEDED, image_id=image_id, image_status=image_status, reason=reason)
    return end_unknown(st, why)


def end_waiting(st: JobState, reason: str) -> End:
    """A job given back that no worker settled (it can no longer be looked up).

    Args:
        st: the job.
        reason: the interruption's reason.
    """
    if st.reconcile or st.confirm is not None:
        return end_unknown(st, NO_LOOK_UP)
    return End(Status.INTERRUPTED, reason=reason)
