"""Shared pieces of the step tests: a context with a fake clock and no network."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from batch.clock import Clock
from batch.models import Job
from batch.options import RunOptions
from batch.pipeline.context import Context
from batch.pipeline.job import JobState, PowerFacts
from batch.scheduling import RateMeter
from batch.tracking import StatePoller


@dataclass
class FakeClock:
    """A monotonic and a wall clock that move only when told."""

    now: float = 1000.0

    def clock(self) -> Clock:
        """The run's clock reading this one."""
        return Clock(monotonic=lambda: self.now, wall=lambda: 1.7e9 + self.now)


@dataclass
class Log:
    """Records event-log calls."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def info(self, event: str, **fields: Any) -> None:
        """Record an info event."""
        self.events.append((event, fields))

    warning = info


def make_context(clock: FakeClock, **options: Any) -> Context:
    """A context whose client is never called (pure steps only)."""
    opts = RunOptions(**options)
    poller: StatePoller[Any] = StatePoller(None, interval=5.0, clock=lambda: clock.now)  # type: ignore[arg-type]
    stops: list[Any] = []
    ctx = Context(
        options=opts,
        clock=clock.clock(),
        rng=random.Random(7),
        log=Log(),
        writer=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        meter=RateMeter(100.0, clock=lambda: clock.now),
        poller=poller,
        stop_run=stops.append,
        stopping=lambda: False,
    )
    ctx.stopped_errors = stops  # type: ignore[attr-defined]
    return ctx


def job_state(instance_id: str = "i-1", name: str = "img-1", *, power: bool = False, **kw: Any) -> JobState:
    """A job in flight."""
    job = Job(instance_id=instance_id, image_name=name, line=2)
    return JobState(job, power=PowerFacts() if power else None, **kw)
