"""--output json: one JSON document on stdout, messages on stderr (validate, report, inventory)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from batch.cli import main
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance

from .conftest import FakeFactory, write_csv

ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}


@pytest.fixture
def creds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's key pair in the zeno CLI variables."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


async def _cli(*argv: str) -> int:
    """``imagebatch ...`` in a worker thread (it runs its own event loop; the fake runs in ours)."""
    return await anyio.to_thread.run_sync(main, list(argv))


def test_validate_good_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A good list: exit 0, stdout is the document alone, the human line goes to stderr."""
    path = write_csv(tmp_path / "jobs.csv", ["1", "2"])
    assert main(["validate", str(path), "--output", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"file": str(path), "ok": True, "jobs": 2, "problems": [], "warnings": []}
    assert "2 jobs, no problems" in captured.err


def test_validate_bad_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad list: exit 2 and every problem, with its place, in the document's problems."""
    path = tmp_path / "jobs.csv"
    path.write_text("\ufeffinstanceId,imageName\n1,x\n1,ok-name\n", encoding="utf-8")
    assert main(["validate", str(path), "--output", "json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["ok"] is False
    assert any(p.startswith(f"{path}:2: field 'imageName'") for p in document["problems"])
    assert any(p.startswith(f"{path}:3: field 'instanceId': duplicate") for p in document["problems"])
    assert document["warnings"] == [f"{path}:1: starts with a UTF-8 byte-order mark (ignored)"]
    assert "2 problem(s); nothing would be sent" in captured.err


@pytest.mark.anyio
async def test_inventory_json(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inventory --output json: the instances with name, zone, state and tags, the calls, the counts."""
    tags = [{"key": "backup", "value": "nightly"}]
    fake = await make_fake(
        [
            FakeInstance("1", zone_id="SEL-A", name="web", tags=tags),
            FakeInstance("2", zone_id="FRA-A", status="RUNNING"),
        ]
    )
    out = tmp_path / "fleet.csv"
    assert await _cli("inventory", "-o", str(out), "--endpoint", fake.url, "--output", "json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["file"] == str(out)
    assert document["count"] == 2
    assert document["apiCalls"] == 1
    assert document["byGroup"] == {"FRA-A": 1, "SEL-A": 1}
    assert document["byStatus"] == {"RUNNING": 1, "STOPPED": 1}
    assert document["instances"][0] == {
        "instanceId": "1",
        "instanceName": "web",
        "zoneId": "SEL-A",
        "resourceGroupId": "rg-default",
        "status": "STOPPED",
        "tags": {"backup": "nightly"},
        "group": "SEL-A",
    }


@pytest.mark.anyio
async def test_inventory_json_when_nothing_matches(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No match: exit 1, a document with no file and no instances, the message on stderr."""
    fake = await make_fake([FakeInstance("1")])
    args = ["inventory", "--zone", "X", "-o", str(tmp_path / "f.csv"), "--endpoint", fake.url, "--output", "json"]
    assert await _cli(*args) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert (document["file"], document["count"], document["instances"]) == (None, 0, [])
    assert "no instance matches" in captured.err


def test_usage_error_leaves_stdout_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag value with --output json: exit 2, the message on stderr, nothing on stdout."""
    assert main(["inventory", "--tag", "no-value", "-o", str(tmp_path / "f.csv"), "--output", "json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--tag 'no-value': 'no-value' is not KEY=VALUE" in captured.err


@pytest.mark.anyio
async def test_report_json_is_the_only_thing_on_stdout(make_fake: FakeFactory, tmp_path: Path) -> None:
    """report --output json --failed-jobs: stdout parses whole; the note about the file is on stderr."""
    fake = await make_fake([FakeInstance("1", gpu=True)])
    jobs = write_csv(tmp_path / "jobs.csv", ["1"])
    out = tmp_path / "run"
    run = [sys.executable, "-m", "batch", "run", str(jobs), "--out", str(out), "--endpoint", fake.url, "--quiet"]
    assert (await anyio.run_process(run, env=ENV, check=False)).returncode == 1
    retry = tmp_path / "retry.csv"
    report = [sys.executable, "-m", "batch", "report", str(out), "--output", "json", "--failed-jobs", str(retry)]
    done = await anyio.run_process(report, env=ENV, check=False)
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["jobs"]["failed"] == 1
    assert document["failedJobsFile"] == str(retry)
    assert b"1 failed job(s) written to" in done.stderr
