"""The slot pacer: requests released together on a grid of short slots, never more than
``rate x slot`` in one, and one timer for all the waiters of a slot."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from batch.scheduling import SlotPacer


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _slots(rate: float, arrivals: list[float]) -> list[int]:
    clock = Clock()
    pacer = SlotPacer(rate, clock=clock)
    got = []
    for at in arrivals:
        clock.now = 500.0 + at
        got.append(pacer.reserve())
    return got


@pytest.mark.parametrize(
    ("rate", "arrivals", "expected"),
    [
        pytest.param(100, [0.0] * 12, [0] * 5 + [1] * 5 + [2] * 2, id="100/s: 5 a slot of 50 ms"),
        pytest.param(10, [0.0] * 3, [0, 2, 4], id="10/s: one every other slot, the first at once"),
        pytest.param(30, [0.0] * 5, [0, 0, 1, 2, 2], id="30/s: 2 and 1 in turn, 1.5 a slot on average"),
        pytest.param(100, [0.0] * 3 + [0.03] * 3, [0] * 5 + [1], id="room left in the current slot is used at once"),
        pytest.param(100, [0.0, 1.0, 1.0], [0, 20, 20], id="after an idle second: the slot of now"),
        pytest.param(100, [0.0] * 6 + [0.06], [0] * 5 + [1, 1], id="a later arrival joins the reserved slot"),
    ],
)
def test_reserve_fills_slots_in_order(rate: float, arrivals: list[float], expected: list[int]) -> None:
    """Each request takes a place in the first slot with one left, at most rate x slot a slot."""
    assert _slots(rate, arrivals) == expected


@pytest.mark.parametrize("rate", [pytest.param(r, id=f"{r}/s") for r in (0.5, 7, 25, 100, 333, 5000)])
def test_no_slot_and_no_first_second_exceeds_the_rate(rate: float) -> None:
    """Whatever the arrivals, no slot holds more than per_slot and the first second at most the rate."""
    rng = random.Random(rate)
    arrivals = sorted(rng.uniform(0, 3) for _ in range(int(rate * 4) + 10))
    arrivals[0] = 0.0
    clock = Clock()
    pacer = SlotPacer(rate, clock=clock)
    starts = []
    for at in arrivals:
        clock.now = 500.0 + at
        index = pacer.reserve()
        assert pacer.start_of(index) >= clock.now - pacer.slot  # never a slot already over
        starts.append(pacer.start_of(index) - 500.0)
    per_slot = Counter(round(s / pacer.slot) for s in starts)
    assert max(per_slot.values()) <= max(1, math.ceil(rate * pacer.slot))
    assert sum(1 for s in starts if s < 1.0 - 1e-9) <= max(rate, 1)
    seconds = Counter(int(s + 1e-9) for s in starts)  # every second from the first request on
    assert max(seconds.values()) <= math.ceil(rate)


@pytest.mark.anyio
async def test_waiters_of_a_slot_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """15 requests at 100/s: slot 0 goes at once, slots 1 and 2 each cost one sleep, in order."""
    sleeps: list[float] = []
    real_sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    async def counting_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(anyio, "sleep", counting_sleep)
    pacer = SlotPacer(100)
    order: list[int] = []

    async def sender(n: int) -> None:
        await pacer.acquire()
        order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(15):
            tg.start_soon(sender, n)
    assert len(sleeps) == 2
    assert sorted(order[:5]) == list(range(5))
    assert sorted(order[5:10]) == list(range(5, 10))


@pytest.mark.anyio
async def test_a_cancelled_sleeper_does_not_strand_its_slot() -> None:
    """When the waiter that sleeps for a slot is cancelled, the others of the slot still go, at its start."""
    pacer = SlotPacer(100)
    for _ in range(5):
        await pacer.acquire()  # slot 0 is full: the next two wait for slot 1
    released: list[float] = []
    async with anyio.create_task_group() as tg:
        sleeper = anyio.CancelScope()

        async def first() -> None:
            with sleeper:
                await pacer.acquire()

        tg.start_soon(first)
        await anyio.lowlevel.checkpoint()  # the first waiter of slot 1 is now its sleeper

        async def other() -> None:
            await pacer.acquire()
            released.append(anyio.current_time())

        tg.start_soon(other)
        await anyio.lowlevel.checkpoint()
        sleeper.cancel()
    assert len(released) == 1
    assert released[0] >= pacer.start_of(1)
