"""``--metrics-file``: the run's numbers in Prometheus text format, for node_exporter's textfile collector.

The file is written with ``prometheus_client``'s own writer (a temporary file beside it, then
``rename(2)``), so a scrape sees the previous file or the new one, never half of one. Every
series carries the labels ``policy`` and ``job_name``. The label is not called ``job``: Prometheus
sets ``job`` on every scraped series to the scrape job, and would rename ours to ``exported_job``.

``imagebatch_last_success_timestamp_seconds`` is the time of the last run that ended with exit
code 0. A run that is still going, or ended otherwise, carries the previous file's value over
(read with ``prometheus_client``'s text parser), so "no success for 26 h" can be alerted on
however many runs failed in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from .errors import UsageError
from .models import Status
from .text import clip

__all__ = ["DEFAULT_INTERVAL", "LAST_SUCCESS", "MetricsFile", "MetricsSnapshot", "MetricsTicker", "previous_success"]

#: Seconds between writes during a run: node_exporter is scraped every 15-60 s, and a write is
#: a few hundred bytes, so more often would show nothing new.
DEFAULT_INTERVAL = 15.0
#: The series "no success for 26 h" alerts on; carried over from the previous file.
LAST_SUCCESS = "imagebatch_last_success_timestamp_seconds"
_LABELS = ("policy", "job_name")


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The numbers of a run at one moment: what the metrics file shows.

    Args:
        now: Unix time of the snapshot (``imagebatch_last_run_timestamp_seconds``).
        duration_seconds: wall time of the run so far.
        jobs: jobs by status (``succeeded``, ``failed``, ... and ``pending`` for jobs not ended);
            every :class:`~batch.models.Status` is written, 0 when absent.
        requests: API requests by ``(action, code)``; ``code`` is the API's error code, an HTTP
            status for answers without one, or ``"OK"``.
        retries: attempts sent again (back-off, busy instances, 5xx).
        throttled: answers 429 (request limit exceeded).
        in_flight: requests sent and not answered yet.
        instances_stopped: instances this run stopped that are not RUNNING again, now.
        instances_left_stopped: instances this run stopped and could not start again (set at the end).
        exit_code: the run's exit code once it ended, ``None`` while it runs; 0 is a success.
    """

    now: float
    duration_seconds: float
    jobs: Mapping[str, int] = field(default_factory=dict)
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)
    retries: int = 0
    throttled: int = 0
    in_flight: int = 0
    instances_stopped: int = 0
    instances_left_stopped: int = 0
    exit_code: int | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the run ended with exit code 0."""
        return self.exit_code == 0


class MetricsFile:
    """The metrics file of a run (or of a scheduled job across its runs).

    Args:
        path: the file; node_exporter's textfile collector reads only names ending in ``.prom``.
        job_name: the ``job_name`` label (``--job-name``): which scheduled job this is.
        policy: the ``policy`` label.

    Raises:
        UsageError: the name does not end in ``.prom``, or a label is empty.
    """

    def __init__(self, path: Path | str, *, job_name: str, policy: str) -> None:
        self.path = Path(path)
        if self.path.suffix != ".prom":
            # A file the collector never reads would make every alert on it silent.
            msg = f"--metrics-file {clip(str(self.path))} must end in .prom (node_exporter reads only those)"
            raise UsageError(msg)
        for name, value in (("--job-name", job_name), ("policy", policy)):
            if not value.strip():
                msg = f"{name} must not be empty: it labels the metrics"
                raise UsageError(msg)
        self.job_name = job_name
        self.policy = policy
        # Read from the previous file at the first write, then kept: this run's own writes
        # replace that file, and a file deleted mid-run must not lose the value.
        self._last_success: float | None = None
        self._read_previous = False

    def check(self) -> None:
        """Raise :class:`UsageError` when the file's directory does not exist (before a run starts)."""
        if not self.path.parent.is_dir():
            msg = f"--metrics-file {clip(str(self.path))}: directory {clip(str(self.path.parent))} does not exist"
            raise UsageError(msg)

    def write(self, snapshot: MetricsSnapshot) -> None:
        """Replace the file with ``snapshot``'s numbers, atomically.

        Args:
            snapshot: the run's numbers now.

        Raises:
            OSError: the file or its temporary twin cannot be written.
        """
        if not self._read_previous:
            self._last_success = previous_success(self.path, job_name=self.job_name, policy=self.policy)
            self._read_previous = True
        if snapshot.succeeded:
            self._last_success = snapshot.now
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(snapshot, (self.policy, self.job_name), self._last_success))
        write_to_textfile(str(self.path), registry)


def previous_success(path: Path, *, job_name: str, policy: str) -> float | None:
    """The last success time in an existing metrics file for these labels, or ``None``.

    A missing, unreadable or unparsable file has none: the next success writes it anew.

    Args:
        path: the metrics file.
        job_name: the ``job_name`` label to match.
        policy: the ``policy`` label to match.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    wanted = {"policy": policy, "job_name": job_name}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels == wanted and math.isfinite(sample.value):
                    return float(sample.value)
    except ValueError:
        return None
    return None


class _SnapshotCollector(Collector):
    """Yields one snapshot's metric families (a custom collector: no ``_created`` series)."""

    def __init__(self, snapshot: MetricsSnapshot, labels: tuple[str, str], last_success: float | None) -> None:
        self._snapshot = snapshot
        self._labels = list(labels)
        self._last_success = last_success

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot
        jobs = GaugeMetricFamily("imagebatch_jobs", "Jobs of the run by status.", labels=[*_LABELS, "status"])
        counts = {str(status): 0 for status in Status} | dict(s.jobs)
        for status in sorted(counts):
            jobs.add_metric([*self._labels, status], counts[status])
        yield jobs
        requests = CounterMetricFamily(
            "imagebatch_api_requests",
            "API requests of the run by action and code.",
            labels=[*_LABELS, "action", "code"],
        )
        for (action, code), count in sorted(s.requests.items()):
            requests.add_metric([*self._labels, action, code], count)
        yield requests
        yield self._counter("imagebatch_retries", "Attempts sent again.", s.retries)
        yield self._counter("imagebatch_throttled", "Answers 429 (request limit exceeded).", s.throttled)
        yield self._gauge("imagebatch_requests_in_flight", "Requests sent and not answered yet.", s.in_flight)
        yield self._gauge(
            "imagebatch_instances_stopped",
            "Instances this run stopped that are not RUNNING again.",
            s.instances_stopped,
        )
        yield self._gauge(
            "imagebatch_instances_left_stopped",
            "Instances this run stopped and could not start again.",
            s.instances_left_stopped,
        )
        yield self._gauge("imagebatch_run_duration_seconds", "Wall time of the run so far.", s.duration_seconds)
        yield self._gauge("imagebatch_run_running", "1 while the run is going, 0 once it ended.", s.exit_code is None)
        if s.exit_code is not None:
            yield self._gauge("imagebatch_run_exit_code", "Exit code of the run that ended.", s.exit_code)
        yield self._gauge("imagebatch_last_run_timestamp_seconds", "When a run last wrote this file.", s.now)
        if self._last_success is not None:
            yield self._gauge(LAST_SUCCESS, "When a run last ended with exit code 0.", self._last_success)

    def _gauge(self, name: str, text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, text, labels=list(_LABELS))
        family.add_metric(self._labels, float(value))
        return family

    def _counter(self, name: str, text: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, text, labels=list(_LABELS))
        family.add_metric(self._labels, value)
        return family


class MetricsTicker:
    """Writes a run's metrics file now, every ``interval`` seconds, and once more at the end.

    Start :meth:`run` in the run's task group; call :meth:`stop` when the run's outcome is known
    (``snapshot`` then returns the exit code): the last write follows, also when the task is
    cancelled. A write that fails is reported and retried at the next tick; it never stops the run.

    Args:
        metrics: the file to write.
        snapshot: returns the run's numbers now; called in the event loop's thread.
        on_error: told of a failed write (once per different message in a row).
        interval: seconds between writes.
    """

    def __init__(
        self,
        metrics: MetricsFile,
        snapshot: Callable[[], MetricsSnapshot],
        *,
        on_error: Callable[[OSError], None],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if not interval > 0:
            msg = f"metrics interval must be positive, not {interval!r}"
            raise ValueError(msg)
        self._metrics = metrics
        self._snapshot = snapshot
        self._on_error = on_error
        self._interval = interval
        # Made in run(): a cancel scope belongs to the running event loop.
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._last_error: str | None = None
        #: writes that succeeded (for tests and the lead's checks)
        self.writes = 0

    async def run(self) -> None:
        """Write until :meth:`stop` (or cancellation), then write the final numbers."""
        try:
            with anyio.CancelScope() as self._scope:
                if self._stopped:
                    self._scope.cancel()
                while True:
                    await self._write()
                    await anyio.sleep(self._interval)
        finally:
            # Shielded: a cancelled run must still leave its last numbers for the alerts.
            with anyio.CancelScope(shield=True):
                await self._write()

    def stop(self) -> None:
        """End :meth:`run` after one last write."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def _write(self) -> None:
        snapshot = self._snapshot()
        try:
            # A thread: a slow disk must not hold up the event loop's requests.
            await anyio.to_thread.run_sync(self._metrics.write, snapshot)
        except OSError as exc:
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                self._on_error(exc)
            return
        self._last_error = None
        self.writes += 1
