"""Benchmark scenario 8 (CPU that follows the work) runs in quick mode: a smoke test, never a timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(600)
def test_cpu_scenario_quick_mode_prints_every_row(tmp_path: Path) -> None:
    """`run.py --quick --only 8` prints the paced, start-up, waiting and poller rows with their figures."""
    root = Path(__file__).parent.parent
    figures = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", "8", "--json", str(figures)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for heading in ("## 8 CPU at 100 req/s", "## 8 start-up", "## 8 waiting only", "## 8 poller"):
        assert heading in proc.stdout
    rows = {(row["scenario"].split(" (")[0], row["tool"]): row["figures"] for row in json.loads(figures.read_text())}
    paced = rows[("8 CPU at 100 req/s", "imagebatch")]
    assert paced["done"] == "100/100"
    assert "pacing costs" in paced
    assert "imagebatch uses" in rows[("8 CPU at 100 req/s", "SDK + ThreadPoolExecutor(16)")]
    assert rows[("8 CPU at 100 req/s", "bare aiohttp, paced")]["done"] == "100/100"
    # A command that sends nothing never loads aiohttp's server.
    assert "aiohttp.web" not in rows[("8 start-up", "imagebatch --help")]["server or fake imported"]
    assert "aiohttp.web" not in rows[("8 start-up", "imagebatch validate (1 row)")]["server or fake imported"]
    assert float(rows[("8 waiting only", "imagebatch --wait")]["CPU s"]) > 0
    assert {tool for scenario, tool in rows if scenario == "8 poller"} == {
        "imagebatch, 20 awaited",
        "imagebatch, 200 awaited",
    }
