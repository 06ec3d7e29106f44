"""The imagebatch command: exit codes and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.cli import main
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from batch.fake.fleet import instance_id

from .conftest import write_csv


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """A fake-server subprocess with 50 generated instances."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch", "fake-server", "--instances", "50", "--image-ready-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    yield url
    proc.terminate()
    proc.communicate(timeout=20)


@pytest.fixture
def creds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's key pair in the zeno CLI variables."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


def test_validate_good_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A good list: exit 0 and the job count."""
    path = write_csv(tmp_path / "jobs.csv", ["1", "2"])
    assert main(["validate", str(path)]) == 0
    assert "2 jobs, no problems" in capsys.readouterr().out


def test_validate_bad_list_exits_2_listing_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad list: exit 2, each problem on stderr with its place, no traceback."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,imageName\n1,x\n1,ok-name\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "jobs.csv:2: field 'imageName'" in err
    assert "jobs.csv:3: field 'instanceId': duplicate" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["run", "JOBS", "--rate", "0"], "--rate: '0' must be a positive number", id="rate-zero"),
        pytest.param(["run", "JOBS", "--concurrency", "x"], "'x' is not a whole number", id="concurrency-text"),
        pytest.param(["run", "JOBS", "--backoff-base", "-1"], "must be a positive number", id="negative-backoff"),
        pytest.param(["run", "JOBS", "--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """Bad flags: exit 2 and a message naming the flag."""
    path = write_csv(tmp_path / "jobs.csv", ["1"])
    with pytest.raises(SystemExit) as info:
        main([str(path) if a == "JOBS" else a for a in argv])
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_credentials_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No credentials in the environment: exit 2 naming the variables; no run directory made."""
    path = write_csv(tmp_path / "jobs.csv", ["1"])
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "ZENLAYER_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("creds_env")
def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TLS is required beyond loopback."""
    path = write_csv(tmp_path / "jobs.csv", ["1"])
    assert main(["run", str(path), "--endpoint", "http://console.zenlayer.com", "--out", str(tmp_path / "o")]) == 2
    assert "plain http is allowed only for loopback" in capsys.readouterr().err


@pytest.mark.usefixtures("creds_env")
def test_run_against_fake_server(tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A run over loopback: exit 0, the summary table, results on disk; a second run in the same dir refuses."""
    ids = [instance_id(n) for n in range(1, 11)]
    path = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "out"
    argv = ["run", str(path), "--out", str(out), "--endpoint", fake_url, "--rate", "500", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "succeeded       10" in printed
    assert "exit code: 0" in printed
    assert len((out / "results.jsonl").read_text().splitlines()) == 10
    assert main(argv) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # finished: nothing to do, same code


@pytest.mark.usefixtures("creds_env")
def test_run_with_failures_exits_1(tmp_path: Path, fake_url: str) -> None:
    """An instance the fake does not have fails: exit 1."""
    path = write_csv(tmp_path / "jobs.csv", [instance_id(20), "9999"])
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--endpoint", fake_url, "--rate", "500", "--quiet"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["byErrorCode"] == {"INVALID_INSTANCE_NOT_FOUND": 1}


@pytest.mark.usefixtures("creds_env")
def test_bad_list_sends_nothing(tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """run refuses a bad list before any API call: exit 2."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,imageName\n1,x\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--endpoint", fake_url]) == 2
    assert "nothing was sent" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "a refused run leaves no run directory behind"


@pytest.mark.usefixtures("creds_env")
def test_unwritable_run_directory_is_a_clear_error(
    tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run file that cannot be opened (here results.jsonl is a directory) ends in a message, not a traceback."""
    path = write_csv(tmp_path / "jobs.csv", [instance_id(30)])
    out = tmp_path / "out"
    (out / "results.jsonl").mkdir(parents=True)
    assert main(["run", str(path), "--out", str(out), "--endpoint", fake_url, "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "cannot write the run's files" in err
    assert "results.jsonl" in err


@pytest.mark.usefixtures("creds_env")
def test_corrupt_run_header_refuses_resume(tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged run.json: exit 2 naming the file."""
    path = write_csv(tmp_path / "jobs.csv", [instance_id(31)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"runId": "x"}')
    assert main(["run", str(path), "--out", str(out), "--endpoint", fake_url, "--resume"]) == 2
    assert "run.json lacks date, nameTemplate" in capsys.readouterr().err
