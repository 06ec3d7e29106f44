"""Progress displays: the ETA arithmetic, timed log lines (text and JSON) and the rich display."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from batch.live import LineProgress, RichProgress, eta_seconds, make_progress, progress_record
from batch.run import Progress


def snap(elapsed: float, ended: int = 0, total: int = 100, rate: float = 10.0, phase: str = "running") -> Progress:
    return Progress(
        total=total,
        by_status={"succeeded": ended},
        in_flight=0,
        waiting=0,
        awaiting_images=0,
        api_calls=ended,
        elapsed=elapsed,
        rate=rate,
        phase=phase,
    )


@pytest.mark.parametrize(
    ("p", "started", "waits", "expected"),
    [
        pytest.param(snap(10, ended=0, rate=0.0), None, 0.0, None, id="nothing-to-go-by"),
        pytest.param(snap(10, ended=0, rate=10.0), None, 0.0, 10.0, id="pacing-rate-only"),
        pytest.param(snap(10, ended=50, rate=10.0), None, 0.0, 10.0, id="slower-of-observed-and-rate"),
        pytest.param(snap(20, ended=50, rate=10.0), 10.0, 0.0, 10.0, id="observed-after-listing"),
        pytest.param(snap(100, ended=50, rate=10.0), None, 0.0, 100.0, id="observed-slower"),
        pytest.param(snap(10, ended=50, rate=10.0), None, 120.0, 130.0, id="plus-state-waits"),
        pytest.param(snap(10, ended=100, rate=10.0), None, 120.0, 0.0, id="all-ended"),
    ],
)
def test_eta(p: Progress, started: float | None, waits: float, expected: float | None) -> None:
    """The ETA is the remaining jobs at the slower of the observed and paced rate, plus state waits."""
    got = eta_seconds(p, started_work_at=started, waits=waits)
    assert got == (None if expected is None else pytest.approx(expected))


def test_log_lines_every_interval_and_on_phase_change() -> None:
    """Off a terminal a line is written every --progress-interval seconds and at each change of phase."""
    out = io.StringIO()
    show = LineProgress(out, interval=30)
    for t in range(0, 95, 5):
        show(snap(float(t), ended=t))
    show(snap(96.0, ended=96, phase="draining"))
    lines = out.getvalue().splitlines()
    # 0, 30, 60, 90, then the phase change at 96
    assert len(lines) == 5
    assert "[   0.0s]" in lines[0]
    assert "draining" in lines[-1] or "stopping" in lines[-1]


def test_json_log_lines() -> None:
    """--log-format json writes one JSON object a line with the counts and the ETA."""
    out = io.StringIO()
    LineProgress(out, interval=30, json_lines=True)(snap(10.0, ended=40))
    record = json.loads(out.getvalue())
    assert record["event"] == "progress"
    assert record["ended"] == 40
    assert record["total"] == 100
    assert record["etaSeconds"] == 15  # 60 left at the observed 4 a second
    assert record == progress_record(snap(10.0, ended=40))


def test_rich_display_renders_counts_and_eta() -> None:
    """The rich display shows ended/total, the statuses, the steps and an ETA, and ends cleanly."""
    out = io.StringIO()
    show = RichProgress(out)
    p = Progress(
        total=10,
        by_status={"succeeded": 4, "failed": 1},
        in_flight=2,
        waiting=1,
        awaiting_images=2,
        api_calls=7,
        elapsed=5.0,
        rate=2.0,
        power={"down": 2, "queued": 3, "stopping": 1, "starting": 0},
    )
    show(p)
    show(dataclasses.replace(p, phase="ended"))
    show.finish()
    text = out.getvalue()
    assert "5/10 ended" in text
    assert "succeeded 4" in text
    assert "failed 1" in text
    assert "down 2" in text
    assert "ETA" in text


def test_make_progress_picks_lines_off_a_terminal() -> None:
    """A stream that is not a terminal gets timed lines; JSON when asked."""
    assert isinstance(make_progress(io.StringIO()), LineProgress)
    shown = make_progress(io.StringIO(), log_format="json", interval=5)
    assert isinstance(shown, LineProgress)
    assert shown.json_lines
    assert shown.interval == 5
