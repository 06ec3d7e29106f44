"""The benchmark harness works (quick mode): a smoke test, never a timed assertion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(600)
def test_benchmark_quick_mode_runs() -> None:
    """`python benchmarks/run.py --quick --only 1,...,7` finishes and prints every scenario's rows (scenario 8
    has its own smoke test, tests/test_bench_cpu_smoke.py: run once, not twice)."""
    root = Path(__file__).parent.parent
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", "1,2,3,4,5,6,7"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for heading in ("## 1 rate-bound", "## 2 busy 30%", "## 3 client at 2x limit", "## 4 overhead", "## 5 memory"):
        assert heading in proc.stdout
    assert "SDK + ThreadPoolExecutor(8)" in proc.stdout
    assert "bare aiohttp" in proc.stdout
