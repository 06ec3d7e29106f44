"""The one loop that polls every awaited instance and image, 100 ids a call.

:class:`StatePoller` wakes once per ``interval``, looks up *all* awaited instances with
DescribeInstancesStatus and all awaited images with DescribeCustomImages (``imageIds``), and
delivers a :class:`~batch.tracking.states.Resolution` for each wait that ended. A poll costs
``ceil(instances / 100) + ceil(images / 100)`` calls and one sleep, whatever the number of
waits: 10,000 awaited instances cost 100 calls and one timer per poll, and while nothing is
awaited there is no timer and no poll at all.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from ..client import MAX_IDS_PER_CALL, ZecClient
from ..errors import ApiError, FatalRunError, ThrottledError
from ..policy import Attempts, Call, Failed, Retry, RetryOptions, StopRun, Verdict, decide
from .states import (
    MISSING_POLLS,
    POLL_FAILURES,
    REACHED_IMAGE_STATES,
    Awaited,
    Kind,
    Outcome,
    Resolution,
    judge,
)

__all__ = ["StatePoller"]

T = TypeVar("T")


@dataclass(slots=True)
class _Waiter(Generic[T]):
    token: T
    want: frozenset[str]
    deadline: float
    state: str | None = None
    misses: int = 0
    errors: int = 0


Deliver = Callable[[Resolution[T]], object]
Sleep = Callable[[float], Awaitable[None]]


class StatePoller(Generic[T]):
    """The instances and images being waited for, and the one loop that polls them all.

    Tokens need not be hashable: they are told apart by identity. The same token may await
    several items; awaiting the same item again with the same token replaces that wait.

    Attributes:
        polls: polls made.
        calls: look-up calls made (pages aside).
        failed_calls: look-up calls that failed (missed polls).

    Args:
        client: the open client the look-ups go through (its gate and observer apply).
        interval: seconds between the starts of two polls.
        min_gap: seconds at least between a poll's end and the next start, and between two polls
            that :meth:`poll_soon` brought forward.
        missing_polls: answers in a row an item may be absent from before it is ``missing``.
        max_failures: failed look-ups in a row of an item before its wait ends ``error``.
        clock: monotonic clock for deadlines and poll times.
        sleep: awaited with the seconds until the next poll (tests pass a fake one).
    """

    def __init__(
        self,
        client: ZecClient,
        *,
        interval: float,
        min_gap: float = 1.0,
        missing_polls: int = MISSING_POLLS,
        max_failures: int = POLL_FAILURES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._client = client
        self.interval = interval
        self.min_gap = min_gap
        self.missing_polls = missing_polls
        self.max_failures = max_failures
        self._clock = clock
        self._sleep = sleep
        # item id -> {id(token): waiter}, per kind; dict order is poll order (see _seen_chunk)
        self._items: dict[Kind, dict[str, dict[int, _Waiter[T]]]] = {kind: {} for kind in Kind}
        self._by_token: dict[int, set[tuple[Kind, str]]] = {}
        self._counts = dict.fromkeys(Kind, 0)
        self._wake: anyio.Event | None = None
        self._nap: anyio.CancelScope | None = None
        self._next_due = -math.inf
        self._last_poll = -math.inf
        self._soon = False
        self._stopping = False
        self.polls = self.calls = self.failed_calls = 0

    # ----- what is awaited -------------------------------------------------------------------

    def __len__(self) -> int:
        return self._counts[Kind.INSTANCE] + self._counts[Kind.IMAGE]

    @property
    def awaited_instances(self) -> int:
        """Instance waits not yet ended."""
        return self._counts[Kind.INSTANCE]

    @property
    def awaited_images(self) -> int:
        """Image waits not yet ended."""
        return self._counts[Kind.IMAGE]

    def await_instance(self, token: T, instance_id: str, want: frozenset[str], deadline: float) -> None:
        """Wait until ``instance_id`` is in one of the ``want`` states.

        Args:
            token: handed back in the :class:`Resolution`.
            instance_id: the instance.
            want: the states that end the wait as ``reached`` (e.g. ``{"STOPPED"}``).
            deadline: when the wait ends ``timeout``, on the poller's clock.
        """
        if not want:
            msg = f"await_instance({instance_id!r}) needs at least one wanted state"
            raise ValueError(msg)
        self._add(Kind.INSTANCE, token, instance_id, frozenset(want), deadline)

    def await_image(self, token: T, image_id: str, deadline: float) -> None:
        """Wait until ``image_id`` is AVAILABLE (or FAILED, gone, out of time).

        Args:
            token: handed back in the :class:`Resolution`.
            image_id: the image.
            deadline: when the wait ends ``timeout``, on the poller's clock.
        """
        self._add(Kind.IMAGE, token, image_id, REACHED_IMAGE_STATES, deadline)

    def _add(self, kind: Kind, token: T, item_id: str, want: frozenset[str], deadline: float) -> None:
        waiters = self._items[kind].setdefault(item_id, {})
        if id(token) not in waiters:
            self._counts[kind] += 1
        waiters[id(token)] = _Waiter(token, want, deadline)
        self._by_token.setdefault(id(token), set()).add((kind, item_id))
        if self._wake is not None:
            self._wake.set()

    def forget(self, token: T) -> None:
        """Stop every wait of ``token`` without a resolution (the job ended another way).

        Args:
            token: as given to ``await_*``.
        """
        for kind, item_id in self._by_token.pop(id(token), set()):
            self._remove(kind, item_id, id(token), index=False)

    def _remove(self, kind: Kind, item_id: str, key: int, *, index: bool = True) -> _Waiter[T] | None:
        waiters = self._items[kind].get(item_id)
        waiter = waiters.pop(key, None) if waiters is not None else None
        if waiter is None:
            return None
        self._counts[kind] -= 1
        if not waiters:
            del self._items[kind][item_id]
        if index:
            keys = self._by_token.get(key)
            if keys is not None:
                keys.discard((kind, item_id))
                if not keys:
                    del self._by_token[key]
        return waiter

    def drain(self) -> list[Awaited[T]]:
        """Stop every wait; return those that had not ended (e.g. when the run stops)."""
        left = [
            Awaited(w.token, kind, item_id, w.state)
            for kind, items in self._items.items()
            for item_id, waiters in items.items()
            for w in waiters.values()
        ]
        for items in self._items.values():
            items.clear()
        self._by_token.clear()
        self._counts = dict.fromkeys(Kind, 0)
        return left

    # ----- the loop ----------------------------------------------------------------------------

    def poll_soon(self) -> None:
        """Poll early (items were just awaited), but no sooner than ``min_gap`` after the last poll."""
        if not self or self._soon:
            return
        self._soon = True
        if self._nap is not None:
            self._nap.cancel()

    def stop(self) -> None:
        """Make :meth:`run` return (after the call in progress, if any), now or when it starts; the
        waits stay (see :meth:`drain`)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._nap is not None:
            self._nap.cancel()

    def _due(self) -> float:
        if self._soon:
            return min(self._next_due, self._last_poll + self.min_gap)
        return self._next_due

    async def run(self, deliver: Deliver[T], *, on_fatal: Callable[[FatalRunError], object] | None = None) -> None:
        """Poll until :meth:`stop` or a fatal error, delivering each wait that ends.

        Args:
            deliver: called (not awaited) with each :class:`Resolution`; it must not block.
            on_fatal: called with a :class:`FatalRunError` before ``run`` returns; without it,
                the error is raised. The waits stay (see :meth:`drain`).
        """
        # Waits given before the loop runs get their first poll one interval from now, too.
        self._next_due = max(self._next_due, self._clock() + self.interval)
        while not self._stopping:
            if not self:
                # Nothing awaited: no timer, no poll, until something is.
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
                # A new item's first poll comes one interval later (or sooner: poll_soon).
                self._next_due = max(self._next_due, self._clock() + self.interval)
                continue
            delay = self._due() - self._clock()
            if delay > 0:
                with anyio.CancelScope() as self._nap:
                    await self._sleep(delay)
                self._nap = None
                continue  # woken early or not, the due time is checked again
            fatal = await self._poll(deliver)
            if fatal is not None:
                if on_fatal is None:
                    raise fatal
                on_fatal(fatal)
                return

    def _plan(self) -> Iterator[tuple[Kind, list[str]]]:
        """The poll's calls, instances and images taken in turns (a throttled poll that stops
        early does not starve one kind)."""
        per_kind = [[(kind, chunk) for chunk in _chunks(list(self._items[kind]))] for kind in Kind]
        for turn in itertools.zip_longest(*per_kind):
            yield from (call for call in turn if call is not None)

    async def _poll(self, deliver: Deliver[T]) -> FatalRunError | None:
        start = self._clock()
        self.polls += 1
        self._last_poll, self._soon = start, False
        wait_more = 0.0
        for kind, ids in list(self._plan()):
            if self._stopping:
                break
            self.calls += 1
            try:
                seen = await self._look_up(kind, ids)
            except ApiError as err:
                self.failed_calls += 1
                verdict = self._failed_chunk(kind, ids, err, deliver)
                if isinstance(verdict, StopRun) and isinstance(err, FatalRunError):
                    return err
                if isinstance(err, ThrottledError) and isinstance(verdict, Retry):
                    # The rest of this poll would meet the limit too; the next poll starts with
                    # the items not asked about (see _seen_chunk), after the server's wait.
                    wait_more = verdict.delay
                    break
                continue
            self._seen_chunk(kind, ids, seen, deliver)
        end = self._clock()
        self._sweep_deadlines(end, deliver)
        self._next_due = max(start + self.interval, end + max(self.min_gap, wait_more))
        return None

    async def _look_up(self, kind: Kind, ids: list[str]) -> dict[str, str]:
        if kind is Kind.INSTANCE:
            return await self._client.describe_instances_status(ids)
        seen: dict[str, str] = {}
        wanted = set(ids)
        pages = self._client.describe_custom_images(image_ids=ids, page_size=MAX_IDS_PER_CALL)
        async with contextlib.aclosing(pages):  # type: ignore[type-var]
            async for image in pages:
                image_id = str(image.get("imageId"))
                if image_id in wanted:
                    seen[image_id] = str(image.get("imageStatus"))
                    if len(seen) == len(wanted):
                        break  # an API that ignored imageIds would page through every image
        return seen

    def _seen_chunk(self, kind: Kind, ids: list[str], seen: dict[str, str], deliver: Deliver[T]) -> None:
        items = self._items[kind]
        now = self._clock()
        for item_id in ids:
            waiters = items.get(item_id)
            if waiters is None:
                continue  # forgotten while the call was out
            state = seen.get(item_id)
            for key, w in list(waiters.items()):
                if waiters.get(key) is not w:
                    continue  # forgotten or replaced by an earlier delivery
                w.errors = 0
                if state is None:
                    w.misses += 1
                else:
                    w.state, w.misses = state, 0
                outcome = judge(
                    kind, state, w.want, misses=w.misses, missing_polls=self.missing_polls, now=now, deadline=w.deadline
                )
                if outcome is not None and self._remove(kind, item_id, key) is w:
                    deliver(Resolution(w.token, kind, item_id, outcome, w.state))
            if item_id in items:
                # Asked about: to the back of the line, so a poll cut short by throttling asks
                # about the others first next time.
                items[item_id] = items.pop(item_id)

    def _failed_chunk(self, kind: Kind, ids: list[str], err: ApiError, deliver: Deliver[T]) -> Verdict:
        throttled = isinstance(err, ThrottledError)
        waiters = [(item_id, key, w) for item_id in ids for key, w in self._items[kind].get(item_id, {}).items()]
        if not throttled:
            for _, _, w in waiters:
                w.errors += 1
        failures = max((w.errors for _, _, w in waiters), default=0)
        attempts = Attempts(failures=failures, server_wait=err.retry_after or 0.0)
        verdict = decide(err, attempts, RetryOptions(poll_failures=self.max_failures), call=Call.POLL)
        if isinstance(verdict, Failed):
            for item_id, key, w in waiters:
                if self._remove(kind, item_id, key) is w:  # not forgotten by an earlier delivery
                    deliver(Resolution(w.token, kind, item_id, Outcome.ERROR, w.state, err))
        return verdict

    def _sweep_deadlines(self, now: float, deliver: Deliver[T]) -> None:
        """End the waits past their deadline that no answer ended (their call failed or was
        not made): one pass per poll, no timer per item."""
        for kind, items in self._items.items():
            late = [(i, k, w) for i, waiters in items.items() for k, w in waiters.items() if now >= w.deadline]
            for item_id, key, w in late:
                if self._remove(kind, item_id, key) is w:  # not forgotten by an earlier delivery
                    deliver(Resolution(w.token, kind, item_id, Outcome.TIMEOUT, w.state))


def _chunks(ids: list[str], size: int = MAX_IDS_PER_CALL) -> list[list[str]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]
