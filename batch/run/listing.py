"""The run's starting listing: one paginated DescribeCustomImages, kept for this list's names."""

from __future__ import annotations

import anyio

from ..client import ZecClient
from ..errors import ApiError, FatalRunError, PermanentJobError, ThrottledError
from ..events import LISTING_DONE
from ..pipeline.context import Context
from ..plan import LIVE_IMAGE_STATES
from ..policy import Attempts, Call, Retry, decide, lookup_timeout
from ..sources import Validation
from .progress import Phase

__all__ = ["list_existing"]


async def list_existing(client: ZecClient, ctx: Context, wanted: Validation, phase: Phase) -> None:
    """List the account's images into ``ctx.existing`` (names of this list only, live states).

    A read: each failed try gives the next one longer to answer; its own retry budget (not
    ``--max-attempts``). Raises the error that ends the tries as a :class:`FatalRunError`.

    Args:
        client: the open client.
        ctx: the run (its ``existing`` is filled).
        wanted: the job list's validation (which names it may hold).
        phase: what progress shows.
    """
    attempt = 0
    phase.name = "listing"
    while True:
        phase.pages = phase.images = 0
        try:
            found: dict[str, tuple[str, str]] = {}
            timeout = lookup_timeout(ctx.options.total_timeout, attempt)
            async for image in client.describe_custom_images(page_size=1000, request_timeout=timeout):
                phase.images += 1
                name, status = image.get("imageName"), image.get("imageStatus")
                if not isinstance(name, str) or status not in LIVE_IMAGE_STATES:
                    continue
                if wanted.may_contain_name(name):
                    found[name] = (str(image.get("imageId")), str(status))
            ctx.existing = found
            phase.name = "running"
            ctx.log.info(LISTING_DONE, matching=len(found), pages=phase.pages, images=phase.images)
            return
        except ApiError as err:
            attempt += 1
            wait = ctx.meter.on_throttled(err.retry_after) if isinstance(err, ThrottledError) else 0.0
            attempts = Attempts(failures=attempt, server_wait=wait, jitter=ctx.rng.random())
            verdict = decide(err, attempts, ctx.retry, call=Call.LISTING)
            if isinstance(err, (FatalRunError, PermanentJobError)):
                raise
            ctx.retries += 1
            if not isinstance(verdict, Retry):
                raise FatalRunError(
                    err.code,
                    f"could not list existing images after {attempt} attempt{'s' * (attempt != 1)}: {err.message}",
                    status=err.status,
                    request_id=err.request_id,
                    action=err.action,
                ) from err
            await anyio.sleep(verdict.delay)  # Retry-After, if any, then the back-off
