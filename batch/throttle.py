"""The adaptive rate after 429s: a pure policy, driven by an injected clock.

The old design (multiply the rate by 0.85 at most once a second) needed 14 cuts, so 14
seconds, to come down from 10x over the limit, and sent 66 req/s against a 20 req/s limit
five seconds in. This one measures the rate the server actually accepts and cuts to just
below it in one step, however large the overshoot, then climbs back along a cubic curve, as
botocore's adaptive retry mode does (a CUBIC calculator, a measured rate, a token bucket):

* **Measure.** Every send is counted in a ring of short slots by its send time, and every
  429 is counted in the slot its request was *sent* in (the caller passes the send time), so
  a slot's ``sent - refused`` is what the server accepted of it once all its answers are in.
  Slots younger than about twice the latency of recent 429 answers are left out: their
  answers may still be on the way.
* **Cut.** On a 429 the rate becomes ``headroom x accepted`` (never higher than it was).
  ``accepted`` is measured from the send of the first 429 of the episode on: the server's
  bucket was empty then, so from there on it accepts at most its limit, and an initial
  burst allowance does not inflate the estimate. Before enough history exists the rate is
  halved instead. Only a 429 for a request sent *after* the last cut can cut again (one cut
  per round trip, as TCP does): earlier ones are answers the last cut already accounts for.
  Without a measurement it halves at most once per four slots, until one exists.
* **Climb.** From the cut, the rate follows ``w_max + growth * w_max * (t - k)**3``, where
  ``w_max`` is the measured accepted rate: fast at first, flat near ``w_max`` (where the
  429s were), then probing above it, never above twice the measured send rate.
* **Retry-After.** A 429's ``Retry-After`` holds the rate (no climb) until it has passed,
  and is returned so the caller does not resend that request sooner.

Each send costs a clock read and one counter; the rate is recomputed at most once a slot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["AdaptiveThrottle"]

#: The fewest slots a measurement may span.
_MIN_SLOTS = 4


class AdaptiveThrottle:
    """The target send rate below a ceiling, from the sends and 429s it is told about.

    Args:
        ceiling: the configured ``--rate``, requests per second; the rate never exceeds it.
        floor: the lowest rate it will go to.
        headroom: after a 429 the rate is this share of the measured accepted rate.
        backoff: factor applied on a 429 when there is not yet enough history to measure.
        growth: the cubic's constant, as a share of ``w_max`` per second cubed (0.004 brings
            a cut of 10% back in about 3 seconds, then probes 5% above after about 2.4 more).
        window: seconds of history the measurement uses.
        slot: seconds per counting slot (also how often the rate is recomputed).
        max_wait: the longest ``Retry-After`` honoured, seconds.
        clock: monotonic clock, seconds.
    """

    def __init__(
        self,
        ceiling: float,
        *,
        floor: float = 0.2,
        headroom: float = 0.9,
        backoff: float = 0.5,
        growth: float = 0.004,
        window: float = 2.0,
        slot: float = 0.05,
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.headroom = headroom
        self.backoff = backoff
        self.growth = growth
        self.window = window
        self.slot = slot
        self.max_wait = max_wait
        self.clock = clock
        #: how many times the rate was cut
        self.decreases = 0
        #: how many 429s it was told about
        self.throttled = 0
        # Ring of per-slot counts, indexed by absolute slot number modulo its size; a little
        # longer than the window so that slots held back for latency are still there.
        self._size = math.ceil(window / slot) + 20
        self._sent = [0] * self._size
        self._refused = [0] * self._size
        self._head = int(clock() / slot)
        self._first_slot = self._head  # no history before this
        # The curve after the last cut.
        self._below = False  # False: at the ceiling, the fast path
        self._cut_at = -math.inf  # when the rate was last cut
        self._curve_at = -math.inf  # where the curve starts (a cut, or a Retry-After hold)
        self._r0 = ceiling
        self._w_max = ceiling
        self._k = 0.0
        self._hold_until = -math.inf
        # The current 429 episode and the latency of 429 answers.
        self._episode_start = -math.inf
        self._last_refusal = -math.inf
        self._latency = 0.0
        self._cached = ceiling
        self._cached_at = -math.inf
        self._next_slot = 0.0

    # ----- what it is told ------------------------------------------------------------------

    def on_send(self) -> float:
        """Count a request being sent now; return the send time (pass it back on a 429)."""
        now = self.clock()
        index = int(now / self.slot)
        if index > self._head:
            self._roll(index)
        self._sent[index % self._size] += 1
        return now

    def on_throttled(self, *, sent_at: float | None = None, retry_after: float | None = None) -> float:
        """Count a 429 and cut the rate if it calls for it.

        Args:
            sent_at: when the refused request was sent (from :meth:`on_send`); now if unknown.
            retry_after: the answer's ``Retry-After``, seconds, if it had one.

        Returns:
            Seconds the refused request must wait before it is sent again (its Retry-After,
            capped at ``max_wait``; 0 without one).
        """
        now = self.clock()
        sent = now if sent_at is None else min(sent_at, now)
        index = int(now / self.slot)
        if index > self._head:
            self._roll(index)
        sent_index = int(sent / self.slot)
        if self._head - sent_index < self._size:
            self._refused[sent_index % self._size] += 1
        self.throttled += 1
        # Capped: one answer that took very long must not push every slot out of the window.
        self._latency += 0.25 * (min(now - sent, self.window / 4) - self._latency)
        wait = 0.0
        if retry_after is not None and retry_after > 0:
            wait = min(retry_after, self.max_wait)
            if self._below:
                self._restart(now, self._curve(now))  # hold where it is, not where the curve was
            self._hold_until = max(self._hold_until, now + wait)
        if now - self._last_refusal > self.window:
            # A new episode: the server's bucket was empty when this request reached it.
            self._episode_start = sent
        self._last_refusal = now
        if sent < self._cut_at:
            return wait  # sent before the last cut, which already answers it
        self._cut(now)
        return wait

    # ----- what it answers ------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The target rate now, requests per second."""
        if not self._below:
            return self.ceiling
        now = self.clock()
        if now - self._cached_at >= self.slot:
            self._cached = self._curve(now)
            self._cached_at = now
        return self._cached

    def delay(self) -> float:
        """Reserve the next send slot at the current rate; return how long to wait for it.

        0 at the ceiling (the run's rate limiter paces that). Callers reserve one at a time
        (see :class:`batch.scheduling.RateMeter`), so a new rate applies from the next send.
        """
        rate = self.rate
        if rate >= self.ceiling:
            return 0.0
        now = self.clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / rate
        return slot - now

    def accepted_rate(self, since: float) -> float | None:
        """Requests per second the server accepted of those sent since ``since`` whose answers
        are all in; ``None`` when that is less than four slots (0.2 s) of history.

        Args:
            since: monotonic time from which to count (clipped to the window).
        """
        now = self.clock()
        index = int(now / self.slot)
        if index > self._head:
            self._roll(index)
        # Slots sent within about two latencies of now may still have answers on the way.
        settled = now - 2 * self._latency - self.slot
        last = int(settled / self.slot) - 1
        first = max(int(since / self.slot) + 1, self._first_slot, self._head - self._size + 1, last - self._span + 1)
        if last - first + 1 < _MIN_SLOTS:
            return None
        accepted = 0
        for i in range(first, last + 1):
            accepted += self._sent[i % self._size] - self._refused[i % self._size]
        return max(0, accepted) / ((last - first + 1) * self.slot)

    def send_rate(self) -> float:
        """Requests per second sent over the last second (complete slots)."""
        now = self.clock()
        index = int(now / self.slot)
        if index > self._head:
            self._roll(index)
        count = max(1, min(int(1.0 / self.slot), self._head - self._first_slot))
        sent = sum(self._sent[(self._head - 1 - i) % self._size] for i in range(count))
        return sent / (count * self.slot)

    # ----- inside ---------------------------------------------------------------------------

    @property
    def _span(self) -> int:
        return int(self.window / self.slot)

    def _roll(self, index: int) -> None:
        """Move the ring's head to slot ``index``, clearing the slots it passes."""
        for i in range(self._head + 1, min(index, self._head + self._size) + 1):
            self._sent[i % self._size] = 0
            self._refused[i % self._size] = 0
        self._head = index

    def _cut(self, now: float) -> None:
        current = self._curve(now) if self._below else self.ceiling
        measured = self.accepted_rate(self._episode_start)
        if measured is None:
            measured = self.accepted_rate(now - self.window)
        if measured is None:
            if now - self._cut_at < _MIN_SLOTS * self.slot:
                return  # halved moments ago: wait for the history to measure instead
            new, w_max = current * self.backoff, current
        else:
            new, w_max = min(current, self.headroom * measured), measured
            if new >= current:
                return  # the server accepts more than we send: this 429 asks for no cut
        new = max(self.floor, new)
        self._below = True
        self._w_max = max(w_max, new)
        self._cut_at = now
        self._restart(now, new)
        self.decreases += 1

    def _restart(self, now: float, rate: float) -> None:
        """Start the cubic curve over from ``rate`` at ``now`` (same ``w_max``)."""
        self._curve_at = now
        self._r0 = rate
        gap = (self._w_max - rate) / (self.growth * self._w_max)
        self._k = math.copysign(abs(gap) ** (1 / 3), gap)  # W(0) == rate, above or below w_max
        self._cached, self._cached_at = rate, now

    def _curve(self, now: float) -> float:
        """The rate on the cubic curve at ``now`` (no Retry-After hold is climbed through)."""
        t = now - max(self._curve_at, self._hold_until)
        if t <= 0:
            rate = self._r0
        else:
            rate = self._w_max + self.growth * self._w_max * (t - self._k) ** 3
            if rate > self._w_max:
                # Probe above the last measured capacity only as far as sends follow.
                rate = min(rate, max(self._w_max, 2 * self.send_rate()))
        rate = min(self.ceiling, max(self.floor, rate))
        if rate >= self.ceiling:
            self._below = False
        return rate
