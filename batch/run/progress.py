"""What a run shows while it works (:class:`Progress`) and how it ended (:class:`RunOutcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Phase", "Progress", "RunOutcome"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress displays."""

    total: int
    by_status: dict[str, int]
    in_flight: int
    waiting: int
    awaiting_images: int
    api_calls: int
    elapsed: float
    rate: float
    #: what the run is doing: "starting", "listing" (with ``phase_detail`` such as
    #: "page 3, 2,000 images"), "running", "draining", "ended"
    phase: str = "running"
    phase_detail: str = ""
    #: HTTP requests being sent or answered right now (``in_flight`` counts jobs, including
    #: those whose image is awaited)
    requests_in_flight: int = 0
    #: ``--stop-running``: instances down now (stopped by this run, not yet RUNNING), jobs
    #: waiting for a slot, and jobs in the lifecycle's stop, wait and start steps
    power: dict[str, int] = field(default_factory=dict)


@dataclass
class RunOutcome:
    """How a run ended."""

    exit_code: int
    summary: dict[str, Any]
    out_dir: Path


@dataclass(slots=True)
class Phase:
    """What the run is doing now, for :class:`Progress`."""

    #: "starting", "listing", "running", "restoring power", "ended"
    name: str = "starting"
    #: the starting listing: pages answered and images read so far
    pages: int = 0
    images: int = 0
    #: HTTP requests sent and not yet answered
    requests_in_flight: int = 0
