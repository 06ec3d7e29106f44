"""``run --keep`` at the run's start: one listing of the policy's images, and what the journal says.

The policy's images are listed once (DescribeCustomImages with the ``imagebatch-policy`` tag,
1,000 a page, every page, read again whole if ``totalCount`` moves between pages) into a
:class:`~batch.keep.KeepBook`; the listing retries as the one retry policy says (``Call.LISTING``)
and, like the starting listing of names, stops the run (exit 3, nothing sent) if it cannot
answer. A resumed run also reads the journal: the ``delete`` records of earlier processes (ids
their DeleteImages may have carried) and the images their final results count.
"""

from __future__ import annotations

import anyio

from ..client import ZecClient
from ..errors import ApiError, FatalRunError, PermanentJobError, ThrottledError
from ..journal import JOURNAL_FILE, RunDirectory, read_journal
from ..keep import KeepBook, KeepRule
from ..models import Status
from ..pipeline.context import Context
from ..pipeline.prune import Keeper
from ..policy import Attempts, Call, Retry, decide
from ..prune import list_policy_images
from ..retention import ImageRecord
from .progress import Phase
from .tally import Tally

__all__ = ["keep_rule", "start_keeping"]


def keep_rule(ctx: Context) -> KeepRule | None:
    """The run's retention flags (``None`` without ``--keep``).

    Args:
        ctx: the run.
    """
    opts = ctx.options
    if opts.keep is None:
        return None
    return KeepRule(opts.policy, opts.keep, opts.max_age_days, opts.prune_failed)


async def _list(client: ZecClient, ctx: Context, policy: str, phase: Phase) -> list[ImageRecord]:
    attempt = 0
    phase.name = "listing"
    try:
        while True:
            try:
                return await list_policy_images(client, policy)
            except ApiError as err:
                attempt += not isinstance(err, ThrottledError)
                wait = ctx.meter.on_throttled(err.retry_after) if isinstance(err, ThrottledError) else 0.0
                attempts = Attempts(failures=attempt, server_wait=wait, jitter=ctx.rng.random())
                verdict = decide(err, attempts, ctx.retry, call=Call.LISTING)
                if isinstance(err, (FatalRunError, PermanentJobError)):
                    raise
                if not isinstance(verdict, Retry):
                    raise FatalRunError(
                        err.code,
                        f"could not list the images of policy {policy!r} after {attempt} attempt(s): {err.message}",
                        status=err.status,
                        request_id=err.request_id,
                        action=err.action,
                    ) from err
                ctx.retries += 1
                await anyio.sleep(verdict.delay)
    finally:
        phase.name = "running"


async def start_keeping(
    client: ZecClient, ctx: Context, directory: RunDirectory, tally: Tally, phase: Phase, *, resumed: bool
) -> Keeper | None:
    """List the policy's images once and make the run's :class:`Keeper` (``None`` without ``--keep``).

    Args:
        client: the open client.
        ctx: the run (its writer and clock).
        directory: the run directory (a resume reads its journal).
        tally: the run's counters (a resume adds the images earlier processes' final results count).
        phase: what progress shows.
        resumed: whether this process resumes the run.

    Raises:
        FatalRunError: the listing could not answer; nothing was sent.
        ApiError: a fatal or permanent error of the listing.
    """
    rule = keep_rule(ctx)
    if rule is None:
        return None
    journaled: dict[str, str] = {}
    if resumed:
        state = read_journal(directory.file(JOURNAL_FILE))
        journaled = state.deleting
        for record in state.results.values():
            if _final(record):
                tally.count_images(record)
    images = await _list(client, ctx, rule.policy, phase)
    return Keeper(KeepBook(rule, images), ctx.writer, client, journaled=journaled, clock=ctx.clock.monotonic)


def _final(record: dict[str, object]) -> bool:
    try:
        return Status(str(record.get("status"))).final
    except ValueError:
        return False
