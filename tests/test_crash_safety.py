"""Crash safety: SIGKILL at random points, SIGTERM drain, the lock, torn records, changed job lists."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from batch.fake.fleet import instance_id
from batch.journal import RunDirectory, encode_record, read_journal

from .conftest import write_csv

ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}


class FakeProcess:
    """`imagebatch fake-server` in its own process."""

    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batch", "fake-server", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:")

    def inspect(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_fake/inspect", timeout=30) as resp:
            return json.load(resp)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=20)


@pytest.fixture
def fake_factory() -> Iterator[Any]:
    started: list[FakeProcess] = []

    def make(*flags: str) -> FakeProcess:
        fake = FakeProcess(*flags)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def start_run(job_list: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batch",
            "run",
            str(job_list),
            "--out",
            str(out),
            "--endpoint",
            url,
            "--resume",
            "--quiet",
            "--backoff-base",
            "0.05",
            "--backoff-cap",
            "0.5",
            "--lookup-delay",
            "0.3",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def results_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def wait_for_results(out: Path, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "results.jsonl"
        if path.exists() and path.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.02)


@pytest.mark.timeout(300)
def test_sigkill_at_random_points_then_resume(tmp_path: Path, fake_factory: Any) -> None:
    """Killed with SIGKILL five times at random points while answers are being lost, then resumed to
    the end: every instance has exactly one image and every job exactly one result line."""
    count = 300
    fake = fake_factory(
        "--instances",
        str(count),
        "--lost-response-rate",
        "0.15",
        "--latency",
        "0.01",
        "--rate-limit",
        "400",
        "--image-ready-seconds",
        "0.3",
        "--seed",
        "5",
    )
    ids = [instance_id(n) for n in range(1, count + 1)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    rng = random.Random(2026)
    kills = 0
    for _ in range(5):
        proc = start_run(job_list, out, fake.url, "--rate", "300", "--concurrency", "8")
        done_before = len(results_of(out)) if (out / "results.jsonl").exists() else 0
        wait_for_results(out, done_before + rng.randint(1, 40), timeout=20)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=30)
    assert kills >= 3, "the run finished before it could be killed often enough"
    final = start_run(job_list, out, fake.url, "--rate", "300")
    _stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    results = results_of(out)
    assert len(results) == count
    assert sorted(r["instanceId"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} == {"succeeded"}
    seen = fake.inspect()
    assert seen["lostResponses"] > 0
    assert seen["duplicateInstances"] == []
    assert seen["createdPerInstance"] == dict.fromkeys(ids, 1)
    images_by_instance = {r["instanceId"]: r["imageId"] for r in results}
    assert len(set(images_by_instance.values())) == count


def test_sigterm_drains_and_exits_143(tmp_path: Path, fake_factory: Any) -> None:
    """SIGTERM: in-flight requests finish, results and summary are written, exit 143; a resume completes."""
    fake = fake_factory("--instances", "100", "--latency", "0.2")
    ids = [instance_id(n) for n in range(1, 101)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    proc = start_run(job_list, out, fake.url, "--rate", "50", "--concurrency", "8", "--grace", "10")
    wait_for_results(out, 5)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert "stopped by SIGTERM" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stoppedBy"] == "SIGTERM"
    assert summary["finished"] is False
    first = results_of(out)
    assert summary["ended"] == len(first)
    assert summary["pending"] == 100 - len(first)
    created = sum(fake.inspect()["createdPerInstance"].values())
    assert created == len(first), "a request in flight was abandoned instead of drained"
    resumed = start_run(job_list, out, fake.url, "--rate", "200")
    resumed.communicate(timeout=60)
    assert resumed.returncode == 0
    assert sorted(r["instanceId"] for r in results_of(out)) == sorted(ids)
    assert fake.inspect()["duplicateInstances"] == []


def test_second_signal_stops_at_once_and_journal_stays_consistent(tmp_path: Path, fake_factory: Any) -> None:
    """Two SIGINTs: exit 130 without waiting out the grace period; resume then finishes without duplicates."""
    fake = fake_factory("--instances", "30", "--latency", "1")
    ids = [instance_id(n) for n in range(1, 31)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    proc = start_run(job_list, out, fake.url, "--rate", "100", "--grace", "60")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and fake.inspect()["calls"].get("CreateImage", 0) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - started < 30
    state = read_journal(out / "journal.log")
    assert state.torn == 0
    assert state.intents, "intents must be recorded before sending"
    resumed = start_run(job_list, out, fake.url, "--rate", "200")
    resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    assert sorted(r["instanceId"] for r in results_of(out)) == sorted(ids)
    assert fake.inspect()["duplicateInstances"] == []


def test_lock_refuses_a_second_process_and_stale_lock_does_not_block(tmp_path: Path, fake_factory: Any) -> None:
    """While one process holds the run directory another exits 2 naming it; a lock file left by a dead
    process does not block."""
    fake = fake_factory("--instances", "5")
    job_list = write_csv(tmp_path / "jobs.csv", [instance_id(n) for n in range(1, 6)])
    out = tmp_path / "run"
    out.mkdir()
    holder = RunDirectory(out)
    holder.lock()
    try:
        proc = start_run(job_list, out, fake.url)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert f"is in use by pid {os.getpid()}" in stderr
    finally:
        holder.unlock()
    (out / ".lock").write_text("999999")  # what a killed process leaves behind
    proc = start_run(job_list, out, fake.url)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_torn_records_are_ignored_and_results_rebuilt(tmp_path: Path, fake_factory: Any) -> None:
    """A torn last line in the journal and in results.jsonl is dropped, never misread; the resumed
    run ends with exactly one line per job."""
    fake = fake_factory("--instances", "20", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 21)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    first = start_run(job_list, out, fake.url, "--rate", "200")
    first.communicate(timeout=60)
    assert first.returncode == 0
    # A crash mid-write: half a record in each file (and a bit-flipped complete-looking record).
    good = encode_record({"type": "result", "result": {"instanceId": "flip", "imageName": "x", "status": "succeeded"}})
    with (out / "journal.log").open("ab") as handle:
        handle.write(good.replace(b"succeeded", b"succeedex"))
        handle.write(good[: len(good) // 2])
    with (out / "results.jsonl").open("ab") as handle:
        handle.write(b'{"instanceId": "' + ids[15].encode() + b'", "sta')
    state = read_journal(out / "journal.log")
    assert state.torn == 2
    assert "flip" not in state.results
    second = start_run(job_list, out, fake.url, "--rate", "200")
    second.communicate(timeout=60)
    assert second.returncode == 0
    results = results_of(out)
    assert sorted(r["instanceId"] for r in results) == sorted(ids)
    assert read_journal(out / "journal.log").torn == 0
    assert fake.inspect()["duplicateInstances"] == []


def test_changed_job_list_is_refused(tmp_path: Path, fake_factory: Any) -> None:
    """Resuming with a job whose image name changed (or a started job removed) is refused with exit 2."""
    fake = fake_factory("--instances", "5", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 6)]
    job_list = tmp_path / "jobs.csv"
    job_list.write_text("instanceId,imageName\n" + "".join(f"{i},img-{i}\n" for i in ids))
    out = tmp_path / "run"
    proc = start_run(job_list, out, fake.url, "--rate", "200")
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    job_list.write_text("instanceId,imageName\n" + "".join(f"{i},img-{i}\n" for i in ids[:4]) + f"{ids[4]},renamed\n")
    proc = start_run(job_list, out, fake.url)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "differs from the job list this run started with" in stderr
    assert f"1 row(s) changed: line 6: '{ids[4]}' (copy line 6)" in stderr
    assert "resume it as it was with 'imagebatch run --out" in stderr
    assert "Traceback" not in stderr


def test_resume_keeps_the_run_date_for_names(tmp_path: Path, fake_factory: Any) -> None:
    """A resumed run names images with the date the run started, not the day it was resumed."""
    fake = fake_factory("--instances", "3", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 4)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    start_run(job_list, out, fake.url).communicate(timeout=60)
    header = json.loads((out / "run.json").read_text())
    header["date"] = "2020-01-02T03:04:05+00:00"  # as if the run had started that day
    (out / "run.json").write_text(json.dumps(header))
    (out / "journal.log").write_bytes(b"")
    (out / "results.jsonl").write_bytes(b"")
    proc = start_run(job_list, out, fake.url)
    proc.communicate(timeout=60)
    assert {r["imageName"] for r in results_of(out)} >= {f"{ids[1]}-20200102", f"{ids[2]}-20200102"}
