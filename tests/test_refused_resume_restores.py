"""A resume refused as bad input still starts the instances its run stopped (the restart guarantee)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from batch.fake import FakeInstance

from .conftest import CLI_ENV, FakeFactory, write_csv

pytestmark = pytest.mark.anyio

ENV = CLI_ENV
FAST = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1", "--quiet"]


@pytest.mark.parametrize(
    "refusal", ["list-differs", "template-differs", "bad-option", "metrics-dir-missing", "damaged-run-json"]
)
async def test_refused_resume_starts_what_the_run_stopped(make_fake: FakeFactory, tmp_path: Path, refusal: str) -> None:
    """kill -9 while instances are down, then a resume refused with exit 2: they are RUNNING again."""
    fleet = [FakeInstance(f"i-{k:02d}", status="RUNNING") for k in range(6)]
    timing = {"stop_seconds": 0.05, "boot_seconds": 0.05, "image_ready_seconds": 1.5}
    fake = await make_fake(fleet, cloud_kwargs=timing)
    ids = [i.instance_id for i in fleet]
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "batch",
        "run",
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(out),
        "--stop-running",
        "--max-stopped",
        "3",
        "--poll-interval",
        "0.05",
        *FAST,
    ]
    child = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        deadline = time.monotonic() + 60
        while fake.inspect()["stoppedNow"] < 1 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the fake
            await anyio.sleep(0.02)
        assert fake.inspect()["stoppedNow"] >= 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert fake.inspect()["notRunningAnymore"]  # the kill left instances down
    if refusal == "list-differs":
        again = [
            "run",
            str(write_csv(tmp_path / "other.csv", ids[:-1])),
            "--endpoint",
            fake.url,
            "--out",
            str(out),
            "--resume",
            "--start-timeout",
            "30",
            *FAST,
        ]
    elif refusal == "template-differs":
        again = ["run", "--endpoint", fake.url, "--out", str(out), "--resume", "--name-template", "x-{instanceId}"]
    elif refusal == "bad-option":
        again = ["run", "--endpoint", fake.url, "--out", str(out), "--resume", "--max-stopped", "0"]
    elif refusal == "metrics-dir-missing":
        prom = str(tmp_path / "missing" / "m.prom")
        again = ["run", "--endpoint", fake.url, "--out", str(out), "--resume", "--metrics-file", prom]
    else:
        (out / "run.json").write_text("{", encoding="utf-8")
        again = ["run", "--endpoint", fake.url, "--out", str(out), "--resume"]
    again += FAST
    done = await anyio.run_process([sys.executable, "-m", "batch", *again], env=ENV, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "starting them first" in err
    assert "RUNNING again" in err
    assert fake.inspect()["notRunningAnymore"] == []
