"""`imagebatch --help` and `validate` import neither aiohttp's server nor the fake (issue 12's start-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from batch.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.startswith(("batch.fake", "aiohttp.web")))
print("HEAVY", heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["validate", "LIST"]], ids=["help", "validate"])
def test_light_commands_import_no_server_and_no_fake(tmp_path: Path, argv: list[str]) -> None:
    """The modules loaded by --help and validate hold nothing of batch.fake or aiohttp.web."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\ni-1\n", encoding="utf-8")
    args = [str(jobs) if a == "LIST" else a for a in argv]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, check=False)
    assert "HEAVY []" in done.stderr, done.stderr[-500:]
