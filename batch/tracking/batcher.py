"""Batched writes: many jobs' ids in one StopInstances / StartInstances / DeleteImages call.

Jobs ask one at a time (:meth:`Batcher.add`); the batcher waits up to ``linger`` seconds after
the first id for more to join, or until it holds ``max_size`` distinct ids, then sends them in
one call and hands each job its own :class:`BatchResult`. Under load batches fill up on their
own: while ``max_in_flight`` calls are out, new ids gather for the next one.

The batcher does not retry: a failed id or a failed call may still have been applied (the API
reports per-id failures, and a lost answer hides everything), so the caller decides per id,
typically by looking the state up.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from ..client import LAST_REQUEST_ID, MAX_IDS_PER_CALL
from ..errors import ApiError

__all__ = ["BatchResult", "Batcher"]

T = TypeVar("T")

Send = Callable[[list[str]], Awaitable[Sequence[str]]]
Deliver = Callable[["BatchResult[T]"], object]


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[T]):
    """What one id's share of a batched call came to.

    Args:
        token: as given to :meth:`Batcher.add`.
        item_id: the id.
        ok: the call was accepted and did not list this id as failed.
        error: the error of the whole call (``None`` when the call answered, even if it listed
            this id as failed).
        request_id: the ``requestId`` of the call that carried this id, when known.
    """

    token: T
    item_id: str
    ok: bool
    error: ApiError | None
    request_id: str | None


class Batcher(Generic[T]):
    """Collects ids and sends them in batches through ``send``.

    Attributes:
        calls: calls sent.

    Args:
        send: sends one batch and returns the ids that failed, e.g.
            ``lambda ids: client.stop_instances(ids, force_shutdown=False)``. Each call runs in
            its own task, so the request id it reads from the client is its own.
        linger: seconds to wait after the first id for more (a full batch goes at once).
        max_size: distinct ids a call carries at most (100: the API's limit for these actions;
            more would make the client split it, and only the last request id would be kept).
        max_in_flight: calls out at once.
        clock: monotonic clock for ``linger``.
    """

    def __init__(
        self,
        send: Send,
        *,
        linger: float = 0.2,
        max_size: int = MAX_IDS_PER_CALL,
        max_in_flight: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1 or max_in_flight < 1:
            msg = f"Batcher needs max_size >= 1 and max_in_flight >= 1 (got {max_size}, {max_in_flight})"
            raise ValueError(msg)
        self._send = send
        self.linger = linger
        self.max_size = max_size
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._pending: deque[tuple[T, str, float]] = deque()  # (token, id, when added)
        self._pending_ids: Counter[str] = Counter()
        self._in_flight = 0
        self._changed: anyio.Event | None = None
        self._stopping = self._closing = False
        self.calls = 0

    def __len__(self) -> int:
        """Ids not yet answered: pending, or in a call that is out."""
        return len(self._pending) + self._in_flight

    @property
    def pending(self) -> int:
        """Ids not yet sent."""
        return len(self._pending)

    def add(self, token: T, item_id: str) -> None:
        """Send ``item_id`` in a coming call; its :class:`BatchResult` goes to ``deliver``.

        Args:
            token: handed back in the result.
            item_id: the instance or image id (an id added twice before it is sent goes once,
                and each add gets a result).
        """
        if not self._pending:
            self._signal()
        self._pending.append((token, item_id, self._clock()))
        self._pending_ids[item_id] += 1
        if len(self._pending_ids) == self.max_size:
            self._signal()  # full: no need to linger

    def stop(self) -> None:
        """Make :meth:`run` return once the calls out have answered; unsent ids stay (see
        :meth:`drain`)."""
        self._stopping = True
        self._signal()

    def close(self) -> None:
        """Make :meth:`run` send what is pending without lingering, then return."""
        self._closing = True
        self._signal()

    def drain(self) -> list[tuple[T, str]]:
        """Take the ids not yet sent, as ``(token, item_id)``."""
        taken = [(token, item_id) for token, item_id, _ in self._pending]
        self._pending.clear()
        self._pending_ids.clear()
        return taken

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_changed(self, seconds: float = math.inf) -> None:
        self._changed = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._changed.wait()
        self._changed = None

    async def run(self, deliver: Deliver[T]) -> None:
        """Send batches until :meth:`stop` (or :meth:`close` and nothing left).

        Args:
            deliver: called (not awaited) with each :class:`BatchResult`; it must not block.
        """
        slots = anyio.Semaphore(self.max_in_flight)
        async with anyio.create_task_group() as calls:
            while not self._stopping:
                if not self._pending:
                    if self._closing:
                        break
                    await self._wait_changed()  # empty: no timer until an id comes
                    continue
                lingered = self._clock() - self._pending[0][2]  # the oldest id's wait
                if len(self._pending_ids) < self.max_size and not self._closing and lingered < self.linger:
                    await self._wait_changed(self.linger - lingered)
                    continue
                await slots.acquire()  # meanwhile more ids may join this batch
                batch = [] if self._stopping else self._take()
                if not batch:
                    slots.release()
                    continue
                self._in_flight += len(batch)
                calls.start_soon(self._call, batch, deliver, slots)

    def _take(self) -> list[tuple[T, str]]:
        """The oldest pending entries carrying at most ``max_size`` distinct ids."""
        batch: list[tuple[T, str]] = []
        ids: set[str] = set()
        while self._pending:
            token, item_id, _ = self._pending[0]
            if item_id not in ids and len(ids) == self.max_size:
                break
            self._pending.popleft()
            ids.add(item_id)
            batch.append((token, item_id))
            self._pending_ids[item_id] -= 1
            if not self._pending_ids[item_id]:
                del self._pending_ids[item_id]
        return batch

    async def _call(self, batch: list[tuple[T, str]], deliver: Deliver[T], slots: anyio.Semaphore) -> None:
        ids = list(dict.fromkeys(item_id for _, item_id in batch))
        try:
            self.calls += 1
            LAST_REQUEST_ID.set(None)  # this task's own: set by the client for each request
            try:
                failed = set(await self._send(ids))
            except ApiError as err:
                results = [BatchResult(token, item_id, False, err, err.request_id) for token, item_id in batch]
            else:
                request_id = LAST_REQUEST_ID.get()
                results = [
                    BatchResult(token, item_id, item_id not in failed, None, request_id) for token, item_id in batch
                ]
        finally:
            self._in_flight -= len(batch)
            slots.release()
        for result in results:
            deliver(result)
