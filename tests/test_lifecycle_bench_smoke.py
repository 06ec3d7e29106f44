"""The live-fleet benchmark harness works (quick mode, imagebatch only): a smoke test, never a timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIGURES = (
    "calls/instance",
    "wall s",
    "bound s",
    "wall/bound",
    "cap bound s",
    "rate bound s",
    "429s",
    "CPU ms/instance",
    "peakStopped",
    "not running at end",
    "one image each",
)


@pytest.mark.timeout(300)
def test_lifecycle_benchmark_quick_mode_prints_and_saves_every_figure(tmp_path: Path) -> None:
    """`python benchmarks/lifecycle.py --quick --tools imagebatch` prints its row and writes every figure as JSON."""
    root = Path(__file__).parent.parent
    saved = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/lifecycle.py", "--quick", "--tools", "imagebatch", "--json", str(saved)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## live fleet: stop -> image -> start, 40 RUNNING instances, cap 10" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.strip().startswith("imagebatch --stop-running"))
    for name in ("calls/instance=", "wall/bound=", "429s=", "CPU ms/instance=", "peakStopped=", "exit="):
        assert name in row
    assert "SDK" not in proc.stdout
    figures = json.loads(saved.read_text())
    assert figures["scenario"]["instances"] == 40
    assert list(figures["tools"]) == ["imagebatch"]
    for name in FIGURES:
        assert isinstance(figures["tools"]["imagebatch"][name], int | float), name
