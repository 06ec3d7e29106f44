"""``--wait``: follow created images until they are AVAILABLE (or FAILED), with batched polls.

CreateImage only starts an image; it is CREATING for minutes. With ``--wait`` a job ends when
its image does. One poll asks DescribeCustomImages for up to 100 awaited images at a time, every
``--poll-interval`` seconds, for all jobs together: polling costs calls per interval, not per job.

:class:`batch.tracking.StatePoller` generalises this (instances too, its own loop, one timer);
this class stays until the runner uses that one, and judges states by the same rules
(:func:`batch.tracking.judge`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .client import ZecClient
from .tracking import FAILED_IMAGE_STATES, MISSING_POLLS, REACHED_IMAGE_STATES, Kind, Outcome, judge

__all__ = ["FAILED_IMAGE_STATES", "ImageWaiter", "Resolution"]

T = TypeVar("T")


@dataclass(slots=True)
class _Awaited(Generic[T]):
    item: T
    image_id: str
    deadline: float
    note: str | None
    status: str = "CREATING"
    missing: int = 0


@dataclass(frozen=True, slots=True)
class Resolution(Generic[T]):
    """How an awaited image ended: ``available``, ``failed``, ``missing`` or ``timeout``."""

    item: T
    image_id: str
    outcome: str
    image_status: str
    note: str | None


class ImageWaiter(Generic[T]):
    """The images being waited for.

    Args:
        timeout: seconds an image may take before its job fails with ``WAIT_TIMEOUT``.
        clock: monotonic clock.
    """

    def __init__(self, *, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._awaited: dict[str, _Awaited[T]] = {}

    def __len__(self) -> int:
        return len(self._awaited)

    def add(self, item: T, image_id: str, note: str | None = None) -> None:
        """Start waiting for ``image_id`` on behalf of ``item``."""
        self._awaited[image_id] = _Awaited(item, image_id, self.clock() + self.timeout, note)

    def drain(self) -> list[tuple[T, str, str | None]]:
        """Stop waiting for everything; return ``(item, image_id, note)`` for each."""
        items = [(a.item, a.image_id, a.note) for a in self._awaited.values()]
        self._awaited.clear()
        return items

    async def poll(self, client: ZecClient) -> list[Resolution[T]]:
        """Look up every awaited image (100 a call) and return the ones that ended."""
        ids = list(self._awaited)
        seen: dict[str, str] = {}
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            async for image in client.describe_custom_images(image_ids=chunk, page_size=100):
                seen[str(image.get("imageId"))] = str(image.get("imageStatus"))
        now = self.clock()
        ended: list[Resolution[T]] = []
        for image_id in ids:
            entry = self._awaited[image_id]
            status = seen.get(image_id)
            if status is None:
                entry.missing += 1
            else:
                entry.status, entry.missing = status, 0
            outcome = judge(
                Kind.IMAGE,
                status,
                REACHED_IMAGE_STATES,
                misses=entry.missing,
                missing_polls=MISSING_POLLS,
                now=now,
                deadline=entry.deadline,
            )
            if outcome is not None:
                del self._awaited[image_id]
                said = "available" if outcome is Outcome.REACHED else str(outcome)
                ended.append(Resolution(entry.item, image_id, said, entry.status, entry.note))
        return ended
