"""The adaptive throttle as a pure policy: scripted (time, outcome) sequences in, rates out; no HTTP."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import pytest

from batch.throttle import AdaptiveThrottle

T0 = 1000.0  # the clock starts here, so slot boundaries fall on round numbers


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Step:
    """One scripted event at ``at`` seconds after T0: a send, a 429 (of a request sent at
    ``sent``), or a look at the rate."""

    at: float
    what: str  # "send", "429" or "rate"
    sent: float | None = None
    retry_after: float | None = None


@dataclass
class Played:
    """What a script produced."""

    rates: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    throttle: AdaptiveThrottle | None = None


def sends(start: float, stop: float, per_second: float) -> list[Step]:
    """Evenly spaced sends in [start, stop), a little off the slot boundaries."""
    count = round((stop - start) * per_second)
    return [Step(start + 0.001 + i / per_second, "send") for i in range(count)]


def overload(start: float, stop: float, per_second: float, *, limit: float, burst: float, latency: float) -> list[Step]:
    """Sends at ``per_second`` against a token bucket of ``limit``/``burst``; refused ones answered 429."""
    steps, tokens, last = [], burst, start
    for send in sends(start, stop, per_second):
        tokens = min(burst, tokens + (send.at - last) * limit)
        last = send.at
        steps.append(send)
        if tokens >= 1:
            tokens -= 1
        else:
            steps.append(Step(send.at + latency, "429", sent=send.at))
    return steps


def play(steps: list[Step], *, ceiling: float = 200.0, **options: float) -> Played:
    """Feed the steps in time order to a fresh throttle; collect the rates looked at and the waits."""
    clock = Clock()
    throttle = AdaptiveThrottle(ceiling, clock=clock, **options)
    played = Played(throttle=throttle)
    for step in sorted(steps, key=lambda s: s.at):
        clock.now = T0 + step.at
        if step.what == "send":
            throttle.on_send()
        elif step.what == "429":
            sent = None if step.sent is None else T0 + step.sent
            played.waits.append(throttle.on_throttled(sent_at=sent, retry_after=step.retry_after))
        else:
            played.rates.append(throttle.rate)
    return played


def at(*times: float) -> list[Step]:
    """Looks at the rate at these times."""
    return [Step(t, "rate") for t in times]


# A cut from a measured 20 req/s: 2 s of sends at 20/s, all accepted, then one refused.
CUT_AT_20 = [*sends(0, 2, 20), Step(2.0, "send"), Step(2.005, "429", sent=2.0)]


@pytest.mark.parametrize(
    ("steps", "expected", "decreases"),
    [
        pytest.param([*sends(0, 3, 50), *at(1, 3)], [200, 200], 0, id="quiet-stays-at-ceiling"),
        pytest.param(
            [Step(0, "send"), Step(0.01, "429", sent=0), *at(0.02)], [100], 1, id="first-429-without-history-halves"
        ),
        pytest.param(
            [*overload(0, 3, 200, limit=20, burst=20, latency=0.01), *at(3.1)],
            [pytest.approx(18, rel=0.1)],
            None,
            id="10x-over-cuts-to-0.9-of-accepted",
        ),
        pytest.param(
            [*overload(0, 3, 200, limit=20, burst=5, latency=0.2), *at(3.3)],
            [pytest.approx(18, rel=0.1)],
            None,
            id="10x-over-high-latency",
        ),
        pytest.param(
            [*overload(0, 3, 200, limit=100, burst=5, latency=0.01), *at(3.1)],
            [pytest.approx(90, rel=0.1)],
            None,
            id="2x-over-small-bucket",
        ),
        pytest.param([*CUT_AT_20, *at(2.01)], [18], 1, id="measured-cut"),
        pytest.param(
            # 429s answered after the cut for requests sent before it: the cut already counted them.
            [*CUT_AT_20, *[Step(2.01 + i / 100, "429", sent=1.9 + i / 100) for i in range(10)], *at(2.2)],
            [pytest.approx(20 + 0.08 * (0.195 - 2.924) ** 3, abs=0.01)],  # on the curve from the one cut
            1,
            id="one-cut-per-round-trip",
        ),
        pytest.param(
            # Sent at 18/s after the cut (20/s measured after the first cut), one more refused.
            [*CUT_AT_20, *sends(2.01, 2.5, 18), Step(2.5, "429", sent=2.4), *at(2.5)],
            [pytest.approx(18)],
            2,
            id="a-429-sent-after-the-cut-cuts-again",
        ),
        pytest.param(
            [*CUT_AT_20, *sends(2.01, 8, 20), *at(2.01, 3.0, 2.0 + 2.924, 2.0 + 5.4)],
            [18, pytest.approx(19.43, abs=0.05), pytest.approx(20, abs=0.01), pytest.approx(21.21, abs=0.05)],
            1,
            id="climbs-fast-then-flat-near-w_max-then-probes",
        ),
        pytest.param(
            [*CUT_AT_20, *at(2.0 + 5.4, 2.0 + 30)],
            [20, 20],
            1,
            id="no-probing-above-w_max-without-sends",
        ),
        pytest.param(
            # At 2.5 the curve is at 20 + 0.08 * (0.495 - 2.924)**3 = 18.85; held there until 4.5,
            # then back to 20 after cbrt((20 - 18.85) / 0.08) = 2.43 s.
            [*CUT_AT_20, Step(2.5, "429", sent=1.9, retry_after=2.0), *at(2.5, 4.4, 4.5 + 2.43)],
            [pytest.approx(18.85, abs=0.01), pytest.approx(18.85, abs=0.01), pytest.approx(20, abs=0.01)],
            1,
            id="retry-after-holds-the-rate-then-climbs",
        ),
        pytest.param(
            [*overload(0, 2, 50, limit=0, burst=0, latency=0.01), *at(2.01)],
            [pytest.approx(4, abs=0.01)],
            None,
            id="server-accepts-nothing-floor",
        ),
        pytest.param(
            [Step(i * 0.01, "send") for i in range(10)]
            + [Step(i * 0.01 + 0.001, "429", sent=i * 0.01) for i in range(10)]
            + at(0.1),
            # Halved to 100 at 0.001 (w_max 200, k = cbrt(100 / 0.8) = 5), then on the curve.
            [pytest.approx(200 + 0.8 * (0.099 - 5) ** 3)],
            1,
            id="without-history-halves-once-then-waits-to-measure",
        ),
    ],
)
def test_throttle_script(steps: list[Step], expected: list[object], decreases: int | None) -> None:
    """A scripted sequence of sends and 429s gives these rates (and this many cuts)."""
    played = play(steps, floor=4)
    assert played.rates == expected
    assert played.throttle is not None
    if decreases is not None:
        assert played.throttle.decreases == decreases


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        pytest.param(None, 0.0, id="none"),
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(2.5, 2.5, id="seconds"),
        pytest.param(3600.0, 60.0, id="capped-at-max-wait"),
    ],
)
def test_on_throttled_returns_the_retry_after_to_honour(retry_after: float | None, wait: float) -> None:
    """The refused request is told to wait its Retry-After (capped), or not at all without one."""
    played = play([Step(0, "send"), Step(0.01, "429", sent=0, retry_after=retry_after)])
    assert played.waits == [wait]


def test_back_at_the_ceiling_costs_nothing() -> None:
    """Once the curve reaches the ceiling again, delay() is 0 and the rate is the ceiling."""
    clock = Clock()
    throttle = AdaptiveThrottle(40, clock=clock)
    for i in range(40):
        clock.now = T0 + 0.001 + i / 20
        throttle.on_send()
    clock.now = T0 + 2.0
    throttle.on_throttled(sent_at=T0 + 1.99)
    assert throttle.rate == pytest.approx(18)
    assert throttle.delay() == 0.0  # the first slot is now
    assert throttle.delay() == pytest.approx(1 / 18)
    while throttle.rate < 40:  # keep sending at the rate it allows
        clock.now += throttle.delay() or 1 / 40
        throttle.on_send()
        assert clock.now < T0 + 60
    assert throttle.delay() == 0.0


# ----- closed loop: the throttle paces a client against a token-bucket server ---------------------


def simulate(
    *, limit: float, burst: float, ceiling: float, concurrency: int, latency: float, seconds: float = 30
) -> tuple[list[list[int]], AdaptiveThrottle]:
    """Per second at the server: [requests, 429s]. Workers send as soon as the meter lets them."""
    clock = Clock()
    throttle = AdaptiveThrottle(ceiling, floor=min(ceiling, max(0.2, ceiling / 50)), clock=clock)
    timeline = [[0, 0] for _ in range(int(seconds) + 1)]
    tokens, last, next_at, pacer = burst, T0, T0, T0
    free = [T0] * concurrency  # when each worker can send again
    heapq.heapify(free)
    while True:
        turn = max(heapq.heappop(free), pacer, next_at)
        next_at = turn + 1 / ceiling  # the run's limiter at --rate
        clock.now = turn
        send = turn + throttle.delay()
        if send - T0 >= seconds:
            return timeline, throttle
        pacer = clock.now = send
        sent = throttle.on_send()
        arrive = send + latency / 2
        tokens, last = min(burst, tokens + (arrive - last) * limit), arrive
        second = timeline[int(arrive - T0)]
        second[0] += 1
        if tokens >= 1:
            tokens -= 1
        else:
            second[1] += 1
            clock.now = send + latency
            throttle.on_throttled(sent_at=sent)
        heapq.heappush(free, send + latency)


@pytest.mark.parametrize(
    ("limit", "burst", "ceiling", "concurrency", "latency", "max_share"),
    [
        pytest.param(20, 20, 200, 32, 0.002, 0.05, id="10x-bucket-1s"),
        pytest.param(20, 5, 200, 32, 0.002, 0.05, id="10x-bucket-5"),
        pytest.param(20, 20, 200, 32, 0.2, 0.05, id="10x-latency-200ms"),
        pytest.param(20, 2, 1000, 64, 0.05, 0.05, id="50x-bucket-2"),
        pytest.param(100, 5, 200, 8, 0.002, 0.03, id="2x-bucket-5"),
        pytest.param(100, 5, 200, 32, 0.2, 0.03, id="2x-bucket-5-latency-200ms"),
        pytest.param(1000, 50, 3000, 64, 0.02, 0.03, id="3x-at-1000-per-second"),
    ],
)
def test_converges_from_any_overshoot(
    limit: float, burst: float, ceiling: float, concurrency: int, latency: float, max_share: float
) -> None:
    """From 2x to 50x over the server's limit, after 5 s few requests are refused and the server
    stays busy: the 429 share is small and at least 0.9 of the limit is accepted."""
    timeline, throttle = simulate(limit=limit, burst=burst, ceiling=ceiling, concurrency=concurrency, latency=latency)
    settled = timeline[5:-1]
    sent = sum(s[0] for s in settled)
    refused = sum(s[1] for s in settled)
    assert refused / sent <= max_share
    assert (sent - refused) / len(settled) >= 0.9 * limit
    assert max(s[0] for s in timeline) <= ceiling + 1  # never above --rate in any second
    assert 0.8 * limit <= throttle.rate <= 1.1 * limit
    assert math.isfinite(throttle.rate)
