"""What a run shows while it works (:class:`Progress`) and how it ended (:class:`RunOutcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline.context import Context
    from ..scheduling import Dispatcher

__all__ = ["Phase", "Progress", "RunOutcome", "snapshot"]


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
    #: API requests by (action, code or "OK"), retries and 429 answers so far (for --metrics-file)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    retries: int = 0
    throttled: int = 0


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


def snapshot(
    phase: Phase,
    *,
    total: int,
    by_status: dict[str, int],
    calls: int,
    elapsed: float,
    rate: float,
    dispatcher: Dispatcher[Any] | None,
    stopped_by: str | None,
    ctx: Context | None,
    requests: dict[tuple[str, str], int] | None = None,
    throttled: int = 0,
) -> Progress:
    """A :class:`Progress` of the run as it is now.

    Args:
        phase: what the run is doing.
        total: jobs in the list.
        by_status: results by status.
        calls: API calls made by this process.
        elapsed: seconds since this process started.
        rate: the rate the throttle allows now.
        dispatcher: the worker pool's dispatcher (None before it exists).
        stopped_by: why the run stops, if it does.
        ctx: what the steps share (None before it exists).
        requests: API requests by (action, code).
        throttled: answers 429 so far.
    """
    name, detail = phase.name, ""
    if name == "listing":
        detail = f"page {phase.pages + 1}, {phase.images:,} images"
    if name in {"listing", "running"} and dispatcher is not None and dispatcher.stopped:
        name, detail = "draining", stopped_by or ""
    life = ctx.life if ctx is not None else None
    power: dict[str, int] = {}
    if life is not None:
        power = {"down": len(life.ledger.not_running()), **life.counts()}
    return Progress(
        total=total,
        by_status=dict(by_status),
        in_flight=dispatcher.in_flight if dispatcher is not None else 0,
        waiting=dispatcher.waiting if dispatcher is not None else 0,
        awaiting_images=ctx.poller.awaited_images if ctx is not None else 0,
        api_calls=calls,
        elapsed=elapsed,
        rate=rate,
        phase=name,
        phase_detail=detail,
        requests_in_flight=phase.requests_in_flight,
        power=power,
        requests=dict(requests or {}),
        retries=ctx.retries if ctx is not None else 0,
        throttled=throttled,
    )
