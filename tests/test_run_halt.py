"""--halt and --canary over HTTP: the run stops starting jobs, drains, exits 4, and resumes later."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from batch.fake import FakeInstance

from .conftest import CLI_ENV, FakeFactory, run_cli, write_csv

pytestmark = pytest.mark.anyio

ENV = CLI_ENV
FAST = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1", "--quiet"]


async def _run(*argv: str) -> tuple[int, str, str]:
    """``imagebatch run ARGV`` in its own process."""
    return await run_cli("run", *argv)


def _results(out: Path) -> dict[str, dict[str, object]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["instanceId"]: r for r in map(json.loads, lines)}


def _fleet(good: int, bad: int) -> tuple[list[FakeInstance], list[str]]:
    """``bad`` RUNNING instances (CreateImage refuses them) first, then ``good`` STOPPED ones."""
    fleet = [FakeInstance(f"i-bad-{k:03d}", status="RUNNING") for k in range(bad)]
    fleet += [FakeInstance(f"i-ok-{k:03d}") for k in range(good)]
    return fleet, [i.instance_id for i in fleet]


async def test_halt_after_n_failures_drains_and_exits_4(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--halt fail=3 with 10 failing jobs at the head of the list: the run halts after the third
    failure, starts nothing more, exits 4, says why; a resume without --halt finishes the rest."""
    fleet, ids = _fleet(good=40, bad=10)
    fake = await make_fake(fleet)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    code, stdout, _ = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(out),
        "--halt",
        "fail=3",
        "--concurrency",
        "1",
        "--rate",
        "100",
        *FAST,
    )
    assert code == 4
    assert "halted" in stdout
    assert "fail=3" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exitCode"] == 4
    assert summary["stoppedBy"].startswith("halt:")
    results = _results(out)
    assert sum(1 for r in results.values() if r["status"] == "failed") == 3
    assert summary["pending"] == 50 - len(results)
    assert fake.inspect()["images"] == 0  # nothing after the failures was started
    code, _, err = await _run("--endpoint", fake.url, "--out", str(out), "--resume", "--halt-min", "1000", *FAST)
    # the halt rule is kept by the run; a resume that raises --halt-min still halts on fail=3 counted so far
    assert code == 4, err
    code, _, err = await _run(
        "--endpoint", fake.url, "--out", str(out), "--resume", "--halt", "fail=100", "--rate", "100", *FAST
    )
    assert code == 1, err
    results = _results(out)
    assert len(results) == 50
    assert sum(1 for r in results.values() if r["status"] == "succeeded") == 40


async def test_halt_percentage_waits_for_halt_min(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--halt fail=50% counts only after --halt-min jobs ended: 4 failures out of 50 never halt."""
    fleet, ids = _fleet(good=46, bad=4)
    fake = await make_fake(fleet)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(tmp_path / "r"),
        "--halt",
        "fail=50%",
        "--halt-min",
        "10",
        "--concurrency",
        "1",
        "--rate",
        "100",
        *FAST,
    )
    assert code == 1, err
    assert len(_results(tmp_path / "r")) == 50


async def test_a_failed_canary_halts_before_the_rest(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--canary 3 with a failing job among the first three: no other job is started; exit 4."""
    fleet, ids = _fleet(good=20, bad=1)
    fake = await make_fake(fleet)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    code, stdout, _ = await _run(
        str(jobs), "--endpoint", fake.url, "--out", str(out), "--canary", "3", "--rate", "100", *FAST
    )
    assert code == 4
    assert "--canary 3" in stdout
    results = _results(out)
    assert set(results) <= set(ids[:3])
    assert results["i-bad-000"]["status"] == "failed"
    created = set(fake.inspect()["createdPerInstance"])
    assert created <= set(ids[:3])


async def test_good_canaries_let_the_rest_run(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--canary 5 whose canaries succeed: the whole list runs, and the canaries end before any other starts."""
    fleet, ids = _fleet(good=30, bad=0)
    fake = await make_fake(fleet)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(out),
        "--canary",
        "5",
        "--concurrency",
        "8",
        "--rate",
        "200",
        *FAST,
    )
    assert code == 0, err
    results = _results(out)
    assert len(results) == 30

    def at(value: object) -> datetime:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))

    canaries_end = max(at(results[i]["endedAt"]) for i in ids[:5])
    others_start = min(at(results[i]["startedAt"]) for i in ids[5:])
    assert canaries_end <= others_start


async def test_bad_halt_flag_is_a_usage_error(tmp_path: Path) -> None:
    """A --halt the rule cannot read is exit 2 naming the forms."""
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    code, _, err = await _run(str(jobs), "--out", str(tmp_path / "r"), "--halt", "fail=abc")
    assert code == 2
    assert "fail=N" in err


async def test_halt_keeps_the_restart_guarantee(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--stop-running with images that fail: --halt fail=2 halts, and every instance the run stopped
    is RUNNING again at the end (exit 4, not 5)."""
    fleet = [FakeInstance(f"i-{k:02d}", status="RUNNING") for k in range(12)]
    timing = {"stop_seconds": 0.05, "boot_seconds": 0.05, "image_ready_seconds": 0.05}
    timing |= {"failed_images": {i.instance_id for i in fleet}}
    fake = await make_fake(fleet, cloud_kwargs=timing)
    jobs = write_csv(tmp_path / "jobs.csv", [i.instance_id for i in fleet])
    out = tmp_path / "run"
    code, _, err = await _run(
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
        "--halt",
        "fail=2",
        "--rate",
        "200",
        *FAST,
    )
    assert code == 4, err
    seen = fake.inspect()
    assert seen["notRunningAnymore"] == []
    assert seen["peakStopped"] <= 3
    results = _results(out)
    statuses = [r["status"] for r in results.values()]
    assert statuses.count("failed") >= 2
    assert set(statuses) <= {"failed", "interrupted"}  # jobs queued for the cap end interrupted
    assert seen["images"] < 12  # the queued ones were never imaged
    assert all(
        r["power"]["finalState"] == "RUNNING" for r in results.values() if r["power"]["stateAtStart"] == "RUNNING"
    )


async def test_halt_lets_jobs_in_flight_end_as_they_would(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--stop-running --halt: jobs whose instance was already stopped end with their image (succeeded),
    not interrupted; only jobs nothing was done to yet end interrupted; a resume at the threshold
    starts nothing."""
    good = [FakeInstance(f"i-ok-{k:02d}", status="RUNNING") for k in range(10)]
    bad = [FakeInstance(f"i-bad-{k:02d}", status="RUNNING") for k in range(2)]
    fleet = bad + good
    timing = {"stop_seconds": 0.05, "boot_seconds": 0.05, "image_ready_seconds": 0.3}
    timing |= {"failed_images": {i.instance_id for i in bad}}
    fake = await make_fake(fleet, cloud_kwargs=timing)
    jobs = write_csv(tmp_path / "jobs.csv", [i.instance_id for i in fleet])
    out = tmp_path / "run"
    code, _, err = await _run(
        str(jobs),
        "--endpoint",
        fake.url,
        "--out",
        str(out),
        "--stop-running",
        "--max-stopped",
        "6",
        "--poll-interval",
        "0.05",
        "--halt",
        "fail=2",
        "--rate",
        "200",
        *FAST,
    )
    assert code == 4, err
    results = _results(out)
    made = {i for i, n in fake.inspect()["createdPerInstance"].items() if n}
    for instance_id, r in results.items():
        if instance_id in made and not instance_id.startswith("i-bad"):
            assert r["status"] == "succeeded", r  # its image was made: the job ended as it would
        if r["status"] == "interrupted":
            assert instance_id not in made
            assert r["power"]["actions"] == []  # nothing was done to its instance
    assert fake.inspect()["notRunningAnymore"] == []
    calls = dict(fake.inspect()["calls"])
    code, _, err = await _run("--endpoint", fake.url, "--out", str(out), "--resume", *FAST)
    assert code == 4, err
    assert fake.inspect()["calls"].get("CreateImage") == calls.get("CreateImage")
    assert fake.inspect()["calls"].get("StopInstances") == calls.get("StopInstances")


async def test_a_signal_after_a_halt_drains_and_restores(make_fake: FakeFactory, tmp_path: Path) -> None:
    """SIGTERM while a halted run drains is the first signal: exit 143, every stopped instance RUNNING."""
    import signal
    import subprocess

    fleet = [FakeInstance(f"i-{k:02d}", status="RUNNING") for k in range(8)]
    # Slow boots: after the halt, the instances in flight take seconds to be RUNNING again, so the
    # signal arrives while the run drains.
    timing = {"stop_seconds": 0.05, "boot_seconds": 3.0, "image_ready_seconds": 0.3}
    timing |= {"failed_images": {fleet[0].instance_id}}
    fake = await make_fake(fleet, cloud_kwargs=timing)
    jobs = write_csv(tmp_path / "jobs.csv", [i.instance_id for i in fleet])
    argv = [sys.executable, "-m", "batch", "run", str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "run")]
    argv += ["--stop-running", "--max-stopped", "4", "--poll-interval", "0.05", "--halt", "fail=1", "--verbose"]
    child = subprocess.Popen(  # noqa: ASYNC220 - a child that must get a signal at a chosen moment
        [*argv, *FAST], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    def halted() -> bool:
        # --verbose tells the stop on stderr the moment it happens
        assert child.stderr is not None
        return any("run.stopping" in line and "halt:" in line for line in child.stderr)

    try:
        assert await anyio.to_thread.run_sync(halted)
        child.send_signal(signal.SIGTERM)
        assert child.stderr is not None
        await anyio.to_thread.run_sync(child.stderr.read)  # what it says while draining, to its end
        code = await anyio.to_thread.run_sync(child.wait)
    finally:
        if child.poll() is None:
            child.kill()
        if child.stderr is not None:
            child.stderr.close()
    assert code == 143
    assert fake.inspect()["notRunningAnymore"] == []
