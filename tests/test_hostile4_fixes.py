"""Defects a hostile test found in report, inventory, config and their list writing, each pinned."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.cli import main
from batch.config import ConfigError, file_flags, load_config
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance
from batch.journal import encode_record

from .conftest import FakeFactory
from .test_config import run_parser

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}
FAST = ["--quiet", "--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1"]
#: what an API answer may hold: terminal escapes, a bell, newlines and Markdown cell separators
HOSTILE_CODE = "EVIL\x1b[2J\x07|CODE\n| x | y |"
HOSTILE_REQUEST_ID = "R" * 10_000 + "\x1b[31m"
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def creds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's key pair in the zeno CLI variables."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


async def _cli(*argv: str) -> int:
    """``imagebatch ...`` in a worker thread (it runs its own event loop; the fake runs in ours)."""
    return await anyio.to_thread.run_sync(main, list(argv))


@pytest.fixture
async def run_dir(make_fake: FakeFactory, tmp_path: Path) -> Path:
    """A finished run over HTTP of three jobs: one succeeds, a GPU instance and a missing one fail."""
    fake = await make_fake([FakeInstance("1"), FakeInstance("2", gpu=True)])
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\n1\n2\n3\n")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "batch", "run", str(jobs), "--out", str(out), "--endpoint", fake.url, *FAST]
    done = await anyio.run_process(argv, env=ENV, check=False)
    assert done.returncode == 1
    return out


def _files(directory: Path) -> dict[str, bytes]:
    """Every file of a directory by name, with its bytes."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``imagebatch report ...``: the exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _strict_json(text: str) -> Any:
    """Parse as a strict JSON reader would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    return json.loads(text, parse_constant=refuse)


def _append_hostile_failure(run: Path) -> None:
    """A result as the journal would hold it had the API answered with hostile text."""
    result = {
        "instanceId": "3",
        "status": "failed",
        "error": {"code": HOSTILE_CODE, "message": "m\x1b]0;owned\x07", "requestId": HOSTILE_REQUEST_ID},
        "attempts": 1,
        "requestIds": [HOSTILE_REQUEST_ID],
    }
    with (run / "journal.log").open("ab") as handle:
        handle.write(encode_record({"type": "result", "result": result}))


# 3. --config: the whole file is checked, a byte order mark is accepted

GOOD = 'rate = 10\n\n[nightly]\nstop-running = true\n\n[weekend]\nmax-stopped = "25%"\n'


@pytest.mark.parametrize("profile", [pytest.param("nightly", id="other-profile"), pytest.param(None, id="no-profile")])
@pytest.mark.parametrize(
    ("weekend", "said"),
    [
        pytest.param("rat = 5", "{}:8: [weekend] unknown key 'rat'", id="unknown-key"),
        pytest.param('password = "hunter2"', "{}:8: [weekend] 'password': secrets do not go", id="secret"),
        pytest.param("[weekend.deep]\nrate = 1", "[weekend] [deep]: profiles cannot be nested", id="nested"),
        pytest.param("rate = 0.0001", "{}:8: [weekend] rate", id="bad-value"),
    ],
)
def test_every_profile_is_checked_whichever_is_used(
    tmp_path: Path, profile: str | None, weekend: str, said: str
) -> None:
    """A problem in [weekend] is a ConfigError naming its line and profile when [nightly] (or none) is used."""
    path = tmp_path / "imagebatch.toml"
    path.write_text(GOOD + weekend + "\n")
    flags = file_flags(run_parser())
    with pytest.raises(ConfigError) as caught:
        load_config(path, profile=profile, flags=flags)
    assert said.format(path) in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 file starting with a BOM (Windows editors) loads like one without, lines counted the same."""
    flags = file_flags(run_parser())
    path = tmp_path / "imagebatch.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_config(path, profile="weekend", flags=flags) == {"rate": 10.0, "max_stopped": "25%"}
    path.write_bytes(b"\xef\xbb\xbf" + b"rate = 10\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r":2: unknown key 'bogus'"):
        load_config(path, profile=None, flags=flags)


