"""imagebatch report RUN_DIR: on finished, stopped and killed runs made over HTTP against the fake."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.cli import main
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance
from batch.journal import JOURNAL_FILE, read_journal

from .conftest import FakeFactory

ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}
FAST = ["--quiet", "--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1"]


@pytest.fixture
def creds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's key pair in the zeno CLI variables."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """``imagebatch report ... --output json``: the exit code and the document."""
    capsys.readouterr()
    code = main(["report", *argv, "--output", "json"])
    return code, json.loads(capsys.readouterr().out)


async def _cli(*argv: str) -> int:
    """``imagebatch ...`` in a worker thread (it runs its own event loop; the fake runs in ours)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def _run(*argv: str) -> int:
    """``imagebatch run ...`` in its own process (it handles signals, which only a main thread can)."""
    done = await anyio.run_process([sys.executable, "-m", "batch", "run", *argv], env=ENV, check=False)
    return done.returncode


async def _report_async(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """:func:`_report` from a test running in an event loop."""
    return await anyio.to_thread.run_sync(_report, capsys, *argv)


@pytest.fixture
async def finished_run(make_fake: FakeFactory, creds_env: None, tmp_path: Path) -> Path:
    """A finished run of six jobs: a GPU instance and a missing one fail, one CreateImage is retried."""
    fleet = [FakeInstance(str(n)) for n in (1, 2, 3, 4)] + [FakeInstance("5", gpu=True)]
    fake = await make_fake(fleet, scripts={"3": ["503", "ok"]})
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId,imageName,tags,group\n1,,env=prod,a\n2,,,a\n3,,,b\n4,img-four,,b\n5,,,b\n6,,,c\n")
    out = tmp_path / "run"
    assert await _run(str(jobs), "--out", str(out), "--endpoint", fake.url, *FAST) == 1
    return out


@pytest.mark.anyio
async def test_report_of_a_finished_run(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Counts by status, failures by code with ids and request ids, retries, calls, timing with gaps named;
    the run directory is left exactly as it was."""
    before = _contents(finished_run)
    code, report = await _report_async(capsys, str(finished_run))
    assert code == 0
    assert _contents(finished_run) == before
    assert report["state"] == "finished"
    assert report["jobs"] == {
        "total": 6,
        "succeeded": 4,
        "failed": 2,
        "skipped": 0,
        "unknown": 0,
        "interrupted": 0,
        "notEnded": 0,
        "sentWithoutResult": 0,
    }
    by_code = {f["code"]: f for f in report["failures"]}
    assert set(by_code) == {"OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT", "INVALID_INSTANCE_NOT_FOUND"}
    gpu = by_code["OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT"]["jobs"]
    assert [j["instanceId"] for j in gpu] == ["5"]
    assert gpu[0]["requestId"].startswith("T")
    assert gpu[0]["requestId"] in gpu[0]["requestIds"]
    assert [j["instanceId"] for j in by_code["INVALID_INSTANCE_NOT_FOUND"]["jobs"]] == ["6"]
    assert report["retries"]["total"] >= 1
    assert report["retries"]["byCode"]["SERVICE_TEMPORARY_UNAVAILABLE"] == 1
    assert report["apiCalls"]["byAction"]["CreateImage"] >= 6
    time_spent = report["time"]
    assert time_spent["apiSeconds"]["seconds"] > 0
    events = _events(finished_run)
    backoff = sum(e["backoffSeconds"] for e in events if e["event"] == "job.retry_scheduled")
    limiter = sum(e.get("limiterWaitSeconds", 0) for e in events if e["event"] == "api.attempt")
    assert time_spent["backoffSeconds"]["seconds"] == pytest.approx(backoff, abs=0.001)
    assert time_spent["limiterWaitSeconds"]["seconds"] == pytest.approx(limiter, abs=0.001)
    assert time_spent["instanceStateWaitSeconds"]["seconds"] is None
    assert time_spent["imageStateWaitSeconds"]["seconds"] is None
    assert len(report["slowestJobs"]) == 6
    seconds = [j["seconds"] for j in report["slowestJobs"]]
    assert seconds == sorted(seconds, reverse=True)
    assert report["downtime"] is None  # nothing was stopped


@pytest.mark.anyio
async def test_table_and_markdown_show_the_same_facts(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table and Markdown renderings name the failure codes, the figures not recorded and the slowest jobs."""
    assert await _cli("report", str(finished_run)) == 0
    table = capsys.readouterr().out
    assert await _cli("report", str(finished_run), "--output", "markdown") == 0
    markdown = capsys.readouterr().out
    for text in (table, markdown):
        assert "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT" in text
        assert "not recorded" in text
        assert "slowest jobs" in text
    assert "| failed | 2 |" in markdown
    assert markdown.startswith("# imagebatch run ")


@pytest.mark.anyio
async def test_failed_jobs_list_keeps_the_columns_and_validates(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--failed-jobs writes the failed jobs' rows as the run's copy has them, and validate accepts it."""
    retry = tmp_path / "retry.csv"
    code, report = await _report_async(capsys, str(finished_run), "--failed-jobs", str(retry))
    assert code == 0
    assert report["failedJobsFile"] == str(retry)
    with retry.open(newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["instanceId", "imageName", "tags", "group"],
            ["5", "", "", "b"],
            ["6", "", "", "c"],
        ]
    assert await _cli("validate", str(retry)) == 0


@pytest.mark.anyio
async def test_failed_jobs_must_keep_the_format(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .json name for a CSV run's failed jobs: exit 2 naming the format, nothing written."""
    assert await _cli("report", str(finished_run), "--failed-jobs", str(tmp_path / "retry.json")) == 2
    assert "the run's job list is CSV; name the new list .csv" in capsys.readouterr().err
    assert not (tmp_path / "retry.json").exists()


@pytest.mark.anyio
async def test_failed_jobs_of_a_json_list_keep_its_defaults(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON list with defaults: the failed jobs' list keeps the defaults and reads back as the same jobs."""
    fake = await make_fake([FakeInstance("1"), FakeInstance("2", gpu=True)])
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        '{"defaults": {"tags": {"team": "web"}},\n"jobs": [\n{"instanceId": "1"},\n{"instanceId": "2"}\n]}\n'
    )
    out = tmp_path / "run"
    assert await _run(str(jobs), "--out", str(out), "--endpoint", fake.url, *FAST) == 1
    retry = tmp_path / "retry.json"
    assert await _cli("report", str(out), "--failed-jobs", str(retry)) == 0
    document = json.loads(retry.read_text())
    assert document == {"defaults": {"tags": {"team": "web"}}, "jobs": [{"instanceId": "2"}]}
    assert await _cli("validate", str(retry)) == 0


@pytest.mark.anyio
async def test_no_failed_job_writes_no_list(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every job succeeded: --failed-jobs writes nothing and says so."""
    fake = await make_fake([FakeInstance("1")])
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\n1\n")
    out = tmp_path / "run"
    assert await _run(str(jobs), "--out", str(out), "--endpoint", fake.url, *FAST) == 0
    retry = tmp_path / "retry.csv"
    assert await _cli("report", str(out), "--failed-jobs", str(retry)) == 0
    assert "no job failed; " in capsys.readouterr().err
    assert not retry.exists()


class _FakeServer:
    """`imagebatch fake-server` in its own process, slow enough to stop a run midway."""

    def __init__(self, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batch", "fake-server", "--instances", str(count), "--latency", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()


@pytest.fixture
def slow_fake() -> Iterator[_FakeServer]:
    """A fake of 200 instances answering after 50 ms."""
    fake = _FakeServer(200)
    yield fake
    fake.proc.terminate()
    fake.proc.communicate(timeout=20)


def _start_and_stop(slow_fake: _FakeServer, tmp_path: Path, how: signal.Signals) -> Path:
    """Start a run of 200 jobs in a process, send it ``how`` once a few jobs ended, wait for it."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\n" + "".join(f"{10**18 + n}\n" for n in range(1, 201)))
    out = tmp_path / "run"
    argv = ["run", str(jobs), "--out", str(out), "--endpoint", slow_fake.url, "--concurrency", "2", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "batch", *argv], env=ENV, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    for _ in range(3000):  # until 5 jobs ended (at most a minute)
        if results.exists() and results.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(how)
    proc.wait(timeout=60)
    return out


def test_report_of_a_killed_run(slow_fake: _FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 mid-run: the report reads the journal, says the run ended without a final record, counts what is left."""
    out = _start_and_stop(slow_fake, tmp_path, signal.SIGKILL)
    torn_by_the_kill = read_journal(out / JOURNAL_FILE).torn
    with (out / JOURNAL_FILE).open("ab") as handle:
        handle.write(b'0000dead {"type":"res')  # a record torn by the crash
    code, report = _report(capsys, str(out))
    assert code == 0
    assert report["state"] == "ended without a final record (killed, or still running)"
    assert report["exitCode"] is None
    jobs = report["jobs"]
    assert jobs["total"] == 200
    assert jobs["succeeded"] >= 5
    assert jobs["notEnded"] == 200 - jobs["succeeded"] > 0
    assert report["journal"]["tornRecords"] == torn_by_the_kill + 1
    journal = read_journal(out / JOURNAL_FILE)
    assert jobs["sentWithoutResult"] == len(set(journal.intents) - set(journal.results))


def test_report_of_a_run_stopped_by_sigterm(
    slow_fake: _FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM mid-run: the report says the run stopped, why, and how many jobs are left for --resume."""
    out = _start_and_stop(slow_fake, tmp_path, signal.SIGTERM)
    code, report = _report(capsys, str(out))
    assert code == 0
    assert report["state"] == "stopped"
    assert report["stoppedBy"] == "SIGTERM"
    assert report["exitCode"] == 143
    assert report["jobs"]["notEnded"] > 0
    retry = tmp_path / "retry.csv"
    code, report = _report(capsys, str(out), "--failed-jobs", str(retry))
    assert code == 0
    assert report["failedJobsFile"] is None  # interrupted and not-ended jobs are for --resume
    assert not retry.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: p / "nowhere", "does not exist; give the run directory", id="missing"),
        pytest.param(lambda p: _touch(p / "file"), "is not a directory", id="a-file"),
        pytest.param(lambda p: p, "is not a run directory: it has no run.json", id="no-run-json"),
        pytest.param(lambda p: _touch(p / "run.json").parent, "run.json is unreadable", id="empty-run-json"),
    ],
)
def test_bad_run_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str) -> None:
    """A RUN_DIR that is not a run directory: exit 2, a message naming it, no traceback, empty stdout."""
    assert main(["report", str(make(tmp_path)), "--output", "json"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events.jsonl."""
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _contents(directory: Path) -> dict[str, bytes]:
    """Every file of a directory by name, with its bytes."""
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _touch(path: Path) -> Path:
    """An empty file."""
    path.write_text("")
    return path


@pytest.mark.anyio
async def test_downtime_per_instance_of_a_stop_running_run(
    make_fake: FakeFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--stop-running: each instance the run stopped is listed with its downtime, none left stopped."""
    fleet = [FakeInstance("1", status="RUNNING"), FakeInstance("2", status="RUNNING"), FakeInstance("3")]
    fake = await make_fake(fleet, cloud_kwargs={"transition_seconds": 0.05, "image_ready_seconds": 0.05})
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\n1\n2\n3\n")
    out = tmp_path / "run"
    argv = [str(jobs), "--out", str(out), "--endpoint", fake.url, "--stop-running", "--poll-interval", "0.05", *FAST]
    assert await _run(*argv) == 0
    code, report = await _report_async(capsys, str(out))
    assert code == 0
    downtime = report["downtime"]
    assert sorted(d["instanceId"] for d in downtime["instances"]) == ["1", "2"]
    assert all(d["seconds"] > 0 and d["finalState"] == "RUNNING" for d in downtime["instances"])
    assert downtime["stoppedByRun"] == 2
    assert downtime["notSeenRunningAgain"] == []
    assert downtime["totalSeconds"] == pytest.approx(sum(d["seconds"] for d in downtime["instances"]), abs=0.01)
