"""``--metrics-file``: a run's numbers for node_exporter's textfile collector, while it runs and at
the end.

The run already hands a :class:`~batch.run.Progress` snapshot to its display about once a
second; :class:`RunMetrics` keeps the latest one, and the :class:`~batch.metrics.MetricsTicker`
turns it into a :class:`~batch.metrics.MetricsSnapshot` every ~15 s. When the run has ended, the
summary's exit code and the instances it left stopped make the last write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .metrics import MetricsSnapshot
from .run import Progress

__all__ = ["RunMetrics"]

#: statuses a job can end with (the metrics file lists each, 0 when none)
_ENDED = ("succeeded", "failed", "skipped", "unknown", "interrupted")


class RunMetrics:
    """The metrics of one run, from its progress snapshots and, at the end, its summary.

    Args:
        clock: wall clock (Unix time).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._started = clock()
        self._last: Progress | None = None
        self._exit_code: int | None = None
        self._left_stopped = 0
        self._final_jobs: dict[str, int] | None = None

    def observe(self, p: Progress) -> None:
        """Keep the latest snapshot (the run's progress callback)."""
        self._last = p

    def ended(self, exit_code: int, summary: Mapping[str, Any]) -> None:
        """The run has ended: its exit code and what it left stopped make the last write.

        Args:
            exit_code: the process's exit code.
            summary: the run's ``summary.json``.
        """
        self._exit_code = exit_code
        # The whole run's counts (a resume of a finished run hands no progress snapshot, and the
        # file must not then say 0 failed and clear an alert).
        by_status = summary.get("byStatus")
        if isinstance(by_status, Mapping):
            self._final_jobs = {k: int(by_status.get(k, 0) or 0) for k in _ENDED}
            self._final_jobs["pending"] = int(summary.get("pending", 0) or 0)
        power = summary.get("power") or {}
        left = power.get("instancesLeftStopped") if isinstance(power, Mapping) else None
        self._left_stopped = len(left) if isinstance(left, list) and not power.get("leftStoppedOnPurpose") else 0

    def snapshot(self) -> MetricsSnapshot:
        """The numbers now."""
        now = self._clock()
        p = self._last
        if p is None:
            return MetricsSnapshot(
                now=now,
                duration_seconds=now - self._started,
                jobs=dict(self._final_jobs or {}),
                instances_left_stopped=self._left_stopped,
                exit_code=self._exit_code,
            )
        jobs = {k: p.by_status.get(k, 0) for k in _ENDED}
        jobs["pending"] = max(0, p.total - sum(jobs.values()))
        if self._final_jobs is not None:
            jobs = dict(self._final_jobs)
        return MetricsSnapshot(
            now=now,
            duration_seconds=now - self._started,
            jobs=jobs,
            requests=dict(p.requests),
            retries=p.retries,
            throttled=p.throttled,
            in_flight=p.requests_in_flight,
            instances_stopped=int(p.power.get("down", 0)),
            instances_left_stopped=self._left_stopped,
            exit_code=self._exit_code,
        )
