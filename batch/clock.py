"""The run's clocks, injectable: tests pass fake ones instead of sleeping.

A run reads two clocks: a monotonic one for due times, back-offs, deadlines and waits (never
affected by the system's time being set), and the wall clock for what it records (a result's
start and end, downtime, the segments of the summary). Cancel-scope deadlines (the grace after a
signal) stay on the event loop's own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SYSTEM_CLOCK", "Clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    """A monotonic clock and a wall clock.

    Args:
        monotonic: seconds that only go forward (due times, back-offs, deadlines).
        wall: seconds since the epoch (what results and the summary record).
    """

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


#: The clocks of the machine.
SYSTEM_CLOCK = Clock()
