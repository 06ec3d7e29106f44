"""benchmarks/progress_cost.py runs and prints its three rows (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_progress_cost_benchmark_prints_every_row() -> None:
    """A few redraws of each display, measured and printed."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "progress_cost.py"), "--redraws", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "rich display (terminal)" in done.stdout
    assert "log lines, JSON" in done.stdout
    assert "% of a core" in done.stdout
