"""Scheduling: how many requests at once, how fast, and when to try again.

Three meters stack in front of every API request, apart from the client:

* the pool's size caps requests in flight (``--concurrency``);
* one :class:`SlotPacer` per run caps the sending rate (``--rate``): time is cut into short
  slots (about 50 ms) of ``rate x slot`` requests each, counted from the run's first request,
  and the requests of a slot are released together. So there is no first-second burst above
  the rate, and the loop wakes once a slot rather than once a request (measured at 100 req/s:
  a leaky bucket that released requests one by one woke the loop about 8 times per request);
* :class:`~batch.throttle.AdaptiveThrottle` lowers the rate further when the API answers 429:
  to just below the rate the server measurably accepts, then back up along a cubic curve
  (see :mod:`batch.throttle`).

Jobs that must wait (busy instance, back-off) leave the pool and sit in the
:class:`Dispatcher`'s timer heap, so waiting never holds a worker slot.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Generic, TypeVar

import anyio

from .throttle import AdaptiveThrottle

__all__ = ["AdaptiveThrottle", "Dispatcher", "RateMeter", "SlotPacer", "full_jitter"]

T = TypeVar("T")

#: Guards the slot arithmetic against float error (5.0 x 3 is 15.000000000000002).
_EPSILON = 1e-9

#: When the current task's last request was sent: a 429 is counted against its send time.
_SENT_AT: ContextVar[float | None] = ContextVar("imagebatch_sent_at", default=None)


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``.

    Args:
        attempt: how many times this job has already waited (0 for the first wait).
        base: seconds of the first window.
        cap: largest window, seconds.
        rng: the run's random source.
    """
    window = min(cap, base * (2 ** min(attempt, 62)))
    return rng.uniform(0, window)


class SlotPacer:
    """Releases requests on a grid of short slots, never more than ``rate x slot`` in one.

    Slot ``k`` starts ``k x slot`` seconds after the first :meth:`acquire`, and by the end of
    slot ``k`` at most ``ceil(rate x slot x (k + 1))`` places have been given: 100 req/s is 5
    requests every 50 ms, 10 req/s one every other slot, and the first second from the first
    request holds at most ``rate`` requests (no burst; time left idle builds no credit). A
    request takes a place in the first slot that has one left and waits for that slot's start.
    Every request of a slot is woken by the same timer, so at a steady pace the event loop
    wakes once per slot, and the requests' answers, results and journal writes tend to share
    loop iterations too.

    Args:
        rate: requests per second.
        slot: slot length, seconds.
        clock: monotonic clock; it must be the event loop's (``anyio.sleep`` waits by it).
    """

    def __init__(self, rate: float, *, slot: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.slot = slot
        self._per_slot = rate * slot
        #: the most places one slot gives
        self.per_slot = max(1, math.ceil(self._per_slot - _EPSILON))
        self._clock = clock
        self._start: float | None = None
        #: the slot being filled (index from the start), and how many places it has given
        self._index = 0
        self._used = 0
        #: one gate per future slot that has waiters: its first waiter sleeps, the rest wait on it
        self._gates: dict[int, _Gate] = {}

    def _given_before(self, index: int) -> int:
        """Places the slots before ``index`` may give in all."""
        return math.ceil(self._per_slot * index - _EPSILON)

    def _room(self, index: int) -> int:
        return self._given_before(index + 1) - self._given_before(index)

    def _first_with_room(self, index: int) -> int:
        """The first slot from ``index`` on that gives a place (below 1 request a slot, not all do)."""
        if self._per_slot < 1:
            index = max(index, int(self._given_before(index) / self._per_slot) - 1)
        while self._room(index) < 1:
            index += 1
        return index

    def reserve(self) -> int:
        """Take a place in the first slot that has one left; return that slot's index.

        Slot ``k`` starts at :meth:`start_of` ``(k)``. Pure bookkeeping: no waiting here.
        """
        now = self._clock()
        if self._start is None:
            self._start = now
        current = int((now - self._start) / self.slot)
        if current > self._index:
            self._index, self._used = current, 0
        if self._used >= self._room(self._index):
            self._index, self._used = self._first_with_room(self._index + 1), 0
        self._used += 1
        return self._index

    def start_of(self, index: int) -> float:
        """When slot ``index`` starts, on the pacer's clock."""
        assert self._start is not None, "no slot was reserved yet"
        return self._start + index * self.slot

    async def acquire(self) -> None:
        """Wait for a place in a slot; return at that slot's start (at once if it has begun)."""
        index = self.reserve()
        if self.start_of(index) > self._clock():
            await self._wait(index)

    async def _wait(self, index: int) -> None:
        while True:
            gate = self._gates.get(index)
            if gate is None:
                break
            await gate.event.wait()
            if gate.slept:
                return
            # Its sleeper was cancelled (its task is stopping): another waiter takes over.
        gate = self._gates[index] = _Gate()
        try:
            await anyio.sleep(max(0.0, self.start_of(index) - self._clock()))
            gate.slept = True
        finally:
            del self._gates[index]
            gate.event.set()


class _Gate:
    """The waiters of one slot: the first sleeps until the slot starts, then sets the event."""

    __slots__ = ("event", "slept")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.slept = False


class RateMeter:
    """The run's rate limit: a :class:`SlotPacer` plus the adaptive throttle.

    Make it in the running loop, and tell it about every 429 with :meth:`on_throttled` from
    the task that sent the request (the send time travels in a context variable).

    Args:
        rate: ``--rate``, requests per second across all actions.
        clock: monotonic clock for the throttle.
        slot: the pacer's preferred slot length, seconds.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic, slot: float = 0.05) -> None:
        # The grid is counted from the first request and never from a late wake-up, so timer
        # lateness is not lost (a bucket of one request lost it: 100/s became 87/s).
        self.pacer = SlotPacer(rate, slot=slot)
        self.throttle = AdaptiveThrottle(rate, floor=min(rate, max(0.2, rate / 50)), clock=clock)
        # Below the ceiling one sender at a time reserves its slot and waits for it: slots
        # reserved ahead by every worker would keep an old rate for concurrency / rate seconds.
        self._pace = anyio.Lock()

    async def acquire(self) -> None:
        """Wait until one more request may be sent (the caller sends it right away)."""
        await self.pacer.acquire()
        throttle = self.throttle
        if throttle.rate < throttle.ceiling:
            async with self._pace:
                pause = throttle.delay()
                if pause > 0:
                    await anyio.sleep(pause)
        _SENT_AT.set(throttle.on_send())

    def on_throttled(self, retry_after: float | None = None) -> float:
        """Tell the throttle the API answered 429 to this task's last request.

        Args:
            retry_after: the answer's ``Retry-After``, seconds, when it had one.

        Returns:
            Seconds that request must wait before it is sent again (0 without Retry-After).
        """
        return self.throttle.on_throttled(sent_at=_SENT_AT.get(), retry_after=retry_after)


class Dispatcher(Generic[T]):
    """Hands out work: due retries first, then new items from a lazy source.

    Items taken must be given back with :meth:`done` or :meth:`retry_at`; :meth:`take` returns
    ``None`` once the source is drained and nothing is in flight or waiting, or after
    :meth:`stop`.

    New items are read ``batch`` at a time and passed to ``admit`` (awaited) before any of them is
    handed out: the run uses it to make the jobs' intents durable with one fsync per batch.

    Args:
        source: the new items, read lazily (a job list is never held in memory).
        admit: awaited with each batch of new items before they are handed out.
        batch: how many new items to read and admit at once.
        clock: monotonic clock.
    """

    def __init__(
        self,
        source: Iterator[T],
        *,
        admit: Callable[[list[T]], Awaitable[None]] | None = None,
        batch: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source: Iterator[T] | None = source
        self._admit = admit
        self._batch = max(1, batch)
        self._ready: deque[T] = deque()
        self._admitting = False
        self._clock = clock
        self._waiting: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._changed = anyio.Event()
        self._listeners = 0
        #: items read only after :meth:`release` (``--canary``: the rest of the list)
        self._held: Iterator[T] | None = None
        self.stopped = False

    @property
    def in_flight(self) -> int:
        """Items taken and not yet given back."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Items waiting for their retry time."""
        return len(self._waiting)

    def _notify(self) -> None:
        # Only when someone listens: done() runs once per job, and a new Event is not free.
        if self._listeners:
            self._changed.set()
            self._changed = anyio.Event()

    async def take(self) -> T | None:
        """Return the next item to work on, waiting if only retries that are not yet due remain."""
        while not self.stopped:
            if self._waiting and self._waiting[0][0] <= self._clock():
                self._in_flight += 1
                return heapq.heappop(self._waiting)[2]
            if self._ready:
                self._in_flight += 1
                item = self._ready.popleft()
                if self._source is not None and not self._admitting and len(self._ready) < self._batch // 2:
                    # Top up before running dry: this taker waits for the admission while the
                    # others keep working on what is ready.
                    await self._refill()
                    if self.stopped:
                        self._in_flight -= 1
                        self._ready.appendleft(item)
                        return None
                return item
            if self._source is not None and not self._admitting:
                await self._refill()
                continue
            if (
                not self._waiting
                and self._in_flight == 0
                and not self._admitting
                and self._source is None
                and self._held is None
            ):
                self._notify()
                return None
            timeout = self._waiting[0][0] - self._clock() if self._waiting else None
            with anyio.move_on_after(timeout):
                await self.changed()
        return None

    async def _refill(self) -> None:
        assert self._source is not None
        batch = list(itertools.islice(self._source, self._batch))
        if len(batch) < self._batch:
            self._source = None
        if not batch:
            return
        self._admitting = True
        try:
            if self._admit is not None:
                await self._admit(batch)
        finally:
            self._admitting = False
            self._ready.extend(batch)
            self._notify()

    @property
    def finished(self) -> bool:
        """Nothing left: source drained, nothing ready, waiting or in flight."""
        return (
            self._source is None
            and self._held is None
            and not self._ready
            and not self._waiting
            and self._in_flight == 0
            and not self._admitting
        )

    async def changed(self) -> None:
        """Return at the next change (an item given back, a stop)."""
        changed = self._changed
        self._listeners += 1
        try:
            await changed.wait()
        finally:
            self._listeners -= 1

    def done(self) -> None:
        """An item taken is finished."""
        self._in_flight -= 1
        self._notify()

    def retry_at(self, item: T, when: float) -> None:
        """Give an item back, to be handed out again at ``when`` (monotonic seconds)."""
        self._in_flight -= 1
        heapq.heappush(self._waiting, (when, next(self._seq), item))
        self._notify()

    def push(self, item: T, when: float | None = None) -> None:
        """Queue an item to be handed out (again) at ``when`` (default: now), in flight or not.

        Unlike :meth:`retry_at` it does not give back a taken item: a job that moves on to a
        next step calls this, then :meth:`done` for the step it ended.
        """
        heapq.heappush(self._waiting, (self._clock() if when is None else when, next(self._seq), item))
        self._notify()

    def hold(self, rest: Iterator[T]) -> None:
        """Read ``rest`` only after :meth:`release` (and after the current source).

        Args:
            rest: the items held back.
        """
        self._held = rest

    def release(self) -> None:
        """Let the held items in, after what the current source still has."""
        if self._held is None:
            return
        held, self._held = self._held, None
        current = self._source
        self._source = held if current is None else itertools.chain(current, held)
        self._notify()

    def close_source(self) -> None:
        """Start no new item (``--halt``): items not yet handed out are dropped, those in flight or
        waiting for a retry go on until they are done."""
        self._source = None
        self._held = None
        self._ready.clear()
        self._notify()

    def stop(self) -> None:
        """Hand out nothing more; idle takers return ``None``."""
        self.stopped = True
        self._notify()

    def drain_waiting(self) -> list[T]:
        """Remove and return the items waiting for a retry."""
        items = [entry[2] for entry in self._waiting]
        self._waiting.clear()
        return items

    def drain_source(self) -> Iterator[T]:
        """The items never handed out (read lazily)."""
        ready, self._ready = list(self._ready), deque()
        source, self._source = self._source, None
        held, self._held = self._held, None
        return itertools.chain(ready, source if source is not None else (), held if held is not None else ())
