"""What a run counts: calls and answers, job statuses, and the power figures of its summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError
from ..models import Status
from ..power import DownCap, PowerLedger

__all__ = ["CALLS_CHECKPOINT_SECONDS", "Tally", "checkpoint_due", "power_segment", "power_summary"]

#: Calls made while no job ends (busy retries, polls of a --wait) are checkpointed at most this
#: often: a killed process's share of the summary misses at most this much of them. A job's end
#: needs no tick: its result's group carries a checkpoint, within 50 ms.
CALLS_CHECKPOINT_SECONDS = 10.0


@dataclass
class Tally:
    """This process's counters (the summary adds earlier processes' from their checkpoints)."""

    #: calls by action, answers by code ("OK" for success)
    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    #: requests by (action, code or "OK"), and answers 429 (for --metrics-file)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    throttled: int = 0
    #: results by status and by error code, over the whole run (earlier processes included)
    by_status: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    #: ``--keep``: images deleted, kept and failed to delete, over the final results of the
    #: whole run (a job's final line lists what earlier processes deleted for it too)
    images: Counter[str] = field(default_factory=Counter)

    def count_result(self, status: Status, error: ApiError | None) -> None:
        """Count one result.

        Args:
            status: its status.
            error: its error, if any.
        """
        self.by_status[status.value] += 1
        if error is not None:
            self.error_codes[error.code] += 1

    def count_images(self, record: Mapping[str, Any]) -> None:
        """Count a final result line's pruned, kept and not-deleted images (``--keep``).

        Args:
            record: the result line.
        """
        self.images["deleted"] += len(record.get("prunedImageIds") or ())
        self.images["kept"] += len(record.get("keptImageIds") or ())
        self.images["failedToDelete"] += len(record.get("pruneErrors") or ())

    def image_totals(self) -> dict[str, int]:
        """``summary.json``'s ``images``: deleted, kept and failed to delete."""
        return {k: self.images[k] for k in ("deleted", "kept", "failedToDelete")}


def checkpoint_due(
    calls: int, last: Mapping[str, Any] | None, since: float, *, every: float = CALLS_CHECKPOINT_SECONDS
) -> bool:
    """Whether the run's tick queues a checkpoint of its own: calls were made since the last one
    written, and that one is at least ``every`` seconds old.

    A checkpoint costs a write and, within a second, an fsync; written for every call a tick
    saw, it was a fixed cost per poll of a --wait, whatever the poll's size.

    Args:
        calls: the calls this process made so far.
        last: the counters of the last checkpoint written (``None``: none yet).
        since: seconds since it was written.
        every: the shortest time between two checkpoints for calls alone.
    """
    written = int(((last or {}).get("apiCalls") or {}).get("total", 0))
    return calls != written and since >= every


def power_segment(ledger: PowerLedger, cap: DownCap | None) -> dict[str, Any] | None:
    """This process's power counters (None for a plain run).

    Args:
        ledger: the instances the run stopped.
        cap: the cap on instances down (None for a plain run).
    """
    if cap is None and not ledger.stopped:
        return None
    return {**ledger.segment(), "peakStopped": cap.peak if cap is not None else 0}


def power_summary(
    ledger: PowerLedger, cap: DownCap | None, segments: list[dict[str, Any]], *, leave_stopped: bool
) -> dict[str, Any] | None:
    """``--stop-running``: what the run did to the fleet's power, summed over every process of
    the run (None for a plain run).

    Args:
        ledger: the instances the run stopped.
        cap: the cap on instances down (None for a plain run).
        segments: every process's checkpoint, this one's last.
        leave_stopped: ``--leave-stopped``.
    """
    shares = [s["power"] for s in segments if s.get("power")]
    if cap is None and not ledger.stopped and not shares:
        return None
    return {
        "instancesStopped": sum(int(p.get("stopped", 0)) for p in shares),
        "instancesStarted": sum(int(p.get("started", 0)) for p in shares),
        "forcedStops": sum(int(p.get("forced", 0)) for p in shares),
        "peakStopped": max((int(p.get("peakStopped", 0)) for p in shares), default=0) if cap is not None else None,
        "maxStopped": cap.total if cap is not None else None,
        "downtimeSecondsTotal": round(sum(float(p.get("downtimeSecondsTotal", 0.0)) for p in shares), 3),
        "downtimeSecondsLongest": max((float(p.get("downtimeSecondsLongest", 0.0)) for p in shares), default=0.0),
        "instancesLeftStopped": ledger.not_running(),
        "instancesGone": dict(ledger.gone),
        "leftStoppedOnPurpose": leave_stopped,
    }
