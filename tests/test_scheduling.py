"""Scheduling pieces: back-off, the dispatcher, and the rate meter (no burst, 429s per task)."""

from __future__ import annotations

import contextvars
import random
import time
from pathlib import Path

import anyio
import pytest

from batch.options import RunOptions
from batch.run import Run
from batch.scheduling import Dispatcher, RateMeter, full_jitter

from .conftest import CREDS, FakeFactory, instances, write_csv


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_jitter_stays_in_window() -> None:
    """Delays are within [0, min(cap, base * 2**n)] and use the whole window."""
    rng = random.Random(1)
    for attempt, window in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 30.0), (500, 30.0)]:
        delays = [full_jitter(attempt, base=1.0, cap=30.0, rng=rng) for _ in range(500)]
        assert all(0 <= d <= window for d in delays)
        assert max(delays) > window * 0.9


async def _send_in_own_task(meter: RateMeter, clock: Clock, at: float) -> contextvars.Context:
    """Acquire and send at ``at`` from a task of its own; return that task's context."""
    got: list[contextvars.Context] = []

    async def sender() -> None:
        clock.now = at
        await meter.acquire()
        got.append(contextvars.copy_context())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
    return got[0]


@pytest.mark.anyio
async def test_meter_counts_a_429_against_its_own_tasks_send() -> None:
    """A 429 is judged by when *its* request was sent: one sent before the last cut does not cut
    again, one sent after it does, whatever other tasks sent in between."""
    clock = Clock()
    meter = RateMeter(1000, clock=clock)
    first = await _send_in_own_task(meter, clock, 1000.0)
    second = await _send_in_own_task(meter, clock, 1000.1)
    clock.now = 1000.2
    assert second.run(meter.on_throttled) == 0.0
    assert meter.throttle.decreases == 1
    third = await _send_in_own_task(meter, clock, 1000.3)
    clock.now = 1000.4
    first.run(meter.on_throttled)  # sent at 1000.0, before the cut at 1000.2
    assert meter.throttle.decreases == 1
    clock.now = 1000.5
    assert third.run(meter.on_throttled, 2.5) == 2.5  # sent after the cut; its Retry-After comes back
    assert meter.throttle.decreases == 2


@pytest.mark.anyio
async def test_dispatcher_prefers_due_retries_and_ends_when_idle() -> None:
    """Due retries come before new items; take() returns None once everything is given back."""
    clock = Clock()
    dispatcher: Dispatcher[str] = Dispatcher(iter(["a", "b", "c"]), clock=clock)
    assert await dispatcher.take() == "a"
    dispatcher.retry_at("a", clock.now - 1)
    assert await dispatcher.take() == "a"
    dispatcher.done()
    assert await dispatcher.take() == "b"
    dispatcher.done()
    assert await dispatcher.take() == "c"
    dispatcher.done()
    assert await dispatcher.take() is None


@pytest.mark.anyio
async def test_dispatcher_waits_for_retry_time() -> None:
    """With only a future retry left, take() waits for it instead of ending."""
    dispatcher: Dispatcher[str] = Dispatcher(iter(["a"]))
    assert await dispatcher.take() == "a"
    dispatcher.retry_at("a", time.monotonic() + 0.05)
    assert dispatcher.waiting == 1
    assert await dispatcher.take() == "a"
    dispatcher.done()
    assert await dispatcher.take() is None


@pytest.mark.anyio
async def test_dispatcher_stop_releases_waiters() -> None:
    """stop() makes idle takers return None and keeps unstarted items for the caller."""
    dispatcher: Dispatcher[str] = Dispatcher(iter(["a", "b"]))
    assert await dispatcher.take() == "a"
    dispatcher.retry_at("a", time.monotonic() + 100)
    got: list[str | None] = []

    async def taker() -> None:
        got.append(await dispatcher.take())

    async with anyio.create_task_group() as tg:
        dispatcher._source = None  # only the far-future retry is left
        tg.start_soon(taker)
        await anyio.sleep(0.01)
        dispatcher.stop()
    assert got == [None]
    assert dispatcher.drain_waiting() == ["a"]


@pytest.mark.anyio
async def test_rate_meter_has_no_first_second_burst() -> None:
    """At 20/s the meter lets at most 20 acquisitions through in the first second (no bucket burst)."""
    meter = RateMeter(20)
    start = anyio.current_time()
    times = []
    with anyio.move_on_after(1.2):
        while True:
            await meter.acquire()
            times.append(anyio.current_time() - start)
    assert sum(1 for t in times if t < 1.0) <= 20


@pytest.mark.anyio
async def test_run_never_exceeds_rate_in_any_second(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Seen from the server, a --rate 25 run sends at most 25 requests in its first second, and
    about that in every other 1-second window."""
    ids = [f"i-{n}" for n in range(60)]
    fake = await make_fake(instances(*ids))
    stamps: list[float] = []
    original = fake._dispatch

    def recording(request, body, action):  # type: ignore[no-untyped-def]
        stamps.append(time.monotonic())
        return original(request, body, action)

    fake._dispatch = recording  # type: ignore[method-assign]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    opts = RunOptions(rate=25, concurrency=16, seed=1)
    outcome = await Run(job_list, tmp_path / "run", opts, credentials=CREDS, endpoint=fake.url).execute()
    assert outcome.exit_code == 0
    first = stamps[0]
    # No first-second burst: 25, plus one where the first request was itself a little late.
    assert sum(1 for t in stamps if t < first + 1.0) <= 25 + 1
    worst = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    # Later windows may also hold the small slack bucket (2.5 requests at 25/s) that absorbs
    # timer lateness, and one more where both edges of the window hold a request.
    assert worst <= 25 + 2.5 + 1
