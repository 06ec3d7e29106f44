"""Progress people can read: a live ``rich`` display on a terminal, timed lines in a log.

On a terminal the run shows a bar, the counts by status, the jobs in each step (stopping,
imaging, starting), the request rate and 429s, and an ETA. Off a terminal (cron, CI, Kubernetes
logs) it writes one line every ``--progress-interval`` seconds and at every change of phase,
plain or, with ``--log-format json``, one JSON object a line. Both take the same
:class:`~batch.run.Progress` snapshots, which the run hands over about once a second; the
rich display redraws only then (no refresh thread), so its cost follows the snapshots, not the
terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from .report import format_seconds, render_progress
from .run import Progress

__all__ = ["LineProgress", "RichProgress", "eta_seconds", "make_progress", "progress_record"]

#: statuses a job ends with; the rest of ``total`` is still to do
_ENDED = ("succeeded", "failed", "skipped", "unknown", "interrupted")


def eta_seconds(p: Progress, *, started_work_at: float | None = None, waits: float = 0.0) -> float | None:
    """Seconds until the run ends, or ``None`` before there is anything to go by.

    The pace is the slower of the jobs ended per second so far and the pacing rate (a run
    cannot end jobs faster than it may call), plus the time a job spends waiting on its image
    and power states after its last call, ``waits``.

    Args:
        p: the snapshot.
        started_work_at: ``p.elapsed`` when the run began ending jobs (after the listing).
        waits: seconds a job waits on states after its calls (0 without ``--wait``/``--stop-running``).
    """
    ended = sum(p.by_status.get(k, 0) for k in _ENDED)
    remaining = max(0, p.total - ended)
    if remaining == 0:
        return 0.0
    worked = p.elapsed - (started_work_at or 0.0)
    observed = ended / worked if worked > 0 and ended > 0 else 0.0
    paces = [r for r in (observed, p.rate) if r > 0]
    if not paces:
        return None
    return remaining / min(paces) + waits


def progress_record(p: Progress) -> dict[str, Any]:
    """A snapshot as one JSON-ready object (``--log-format json``)."""
    ended = sum(p.by_status.get(k, 0) for k in _ENDED)
    record: dict[str, Any] = {
        "event": "progress",
        "phase": p.phase,
        "elapsed": round(p.elapsed, 1),
        "total": p.total,
        "ended": ended,
        "byStatus": dict(p.by_status),
        "requestsInFlight": p.requests_in_flight,
        "retrying": p.waiting,
        "imagesAwaited": p.awaiting_images,
        "apiCalls": p.api_calls,
        "pacing": round(p.rate, 2),
    }
    if p.phase_detail:
        record["detail"] = p.phase_detail
    if p.power:
        record["power"] = dict(p.power)
    eta = eta_seconds(p)
    if eta is not None:
        record["etaSeconds"] = round(eta)
    return record


class LineProgress:
    """One line every ``interval`` seconds and at every change of phase (a log, not a terminal).

    Args:
        stream: where to write.
        interval: seconds between lines.
        json_lines: one JSON object a line instead of text.
    """

    def __init__(self, stream: TextIO, *, interval: float = 30.0, json_lines: bool = False) -> None:
        self.stream = stream
        self.interval = interval
        self.json_lines = json_lines
        self._last = -1e18
        self._phase = ""

    def __call__(self, p: Progress) -> None:
        """Show one snapshot if a line is due."""
        changed = p.phase != self._phase
        self._phase = p.phase
        if not changed and p.elapsed - self._last < self.interval:
            return
        self._last = p.elapsed
        line = json.dumps(progress_record(p), separators=(",", ":")) if self.json_lines else render_progress(p)
        self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Nothing is left open in a log."""


class RichProgress:
    """A live display for a terminal, drawn with ``rich``.

    Args:
        stream: the terminal (stderr, so stdout keeps only the summary).
    """

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, stderr=stream is sys.stderr)
        # auto_refresh off: the display is redrawn when the run hands over a snapshot (about once
        # a second), not by a thread of its own
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._started = False

    def __call__(self, p: Progress) -> None:
        """Redraw with one snapshot."""
        if not self._started:
            self._live.start()
            self._started = True
        self._live.update(self.render(p), refresh=True)
        if p.phase == "ended":
            self.finish()

    def render(self, p: Progress) -> Any:
        """The display for one snapshot (a rich renderable)."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        ended = sum(p.by_status.get(k, 0) for k in _ENDED)
        eta = eta_seconds(p)
        head = Text.assemble(
            (f"{ended}/{p.total} ended", "bold"),
            f"  {format_seconds(p.elapsed)} elapsed",
            f"  ETA {format_seconds(eta)}" if eta is not None and p.phase not in ("starting", "listing") else "",
            f"  [{p.phase}{': ' + p.phase_detail if p.phase_detail else ''}]",
        )
        bar = ProgressBar(total=max(1, p.total), completed=ended, width=50)
        table = Table.grid(padding=(0, 2))
        table.add_row(*_cells(p.by_status, _ENDED))
        steps = {
            "requests": p.requests_in_flight,
            "retrying": p.waiting,
            "images awaited": p.awaiting_images,
        }
        if p.power:
            steps |= {
                "down": p.power.get("down", 0),
                "queued": p.power.get("queued", 0),
                "stopping": p.power.get("stopping", 0),
                "starting": p.power.get("starting", 0),
            }
        table.add_row(*(f"{k} {v}" for k, v in steps.items()))
        table.add_row(f"{p.api_calls} calls", f"pacing {p.rate:.1f}/s")
        return Group(head, bar, table)

    def finish(self) -> None:
        """Leave the last frame on screen and give the terminal back."""
        if self._started:
            self._live.stop()
            self._started = False


def _cells(counts: Mapping[str, int], keys: tuple[str, ...]) -> list[str]:
    return [f"{k} {counts.get(k, 0)}" for k in keys if counts.get(k, 0) or k in ("succeeded", "failed")]


def make_progress(
    stream: TextIO | None = None, *, interval: float = 30.0, log_format: str = "text"
) -> RichProgress | LineProgress:
    """The display that suits the stream: rich on a terminal, timed lines elsewhere.

    Args:
        stream: where progress goes (default: stderr).
        interval: ``--progress-interval`` (seconds between lines in a log).
        log_format: ``text`` or ``json`` (lines in a log; a terminal always gets the display).
    """
    out = stream or sys.stderr
    if log_format != "json" and bool(getattr(out, "isatty", lambda: False)()):
        return RichProgress(out)
    return LineProgress(out, interval=interval, json_lines=log_format == "json")
