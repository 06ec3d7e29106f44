"""--config FILE --profile NAME: run flags from TOML, their precedence, and clear errors for bad files."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batch.cli import build_parser, main
from batch.config import apply_config, file_flags, load_config
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from batch.fake.fleet import instance_id
from batch.options import RunOptions

from .conftest import write_csv


def run_parser() -> argparse.ArgumentParser:
    """The real ``imagebatch run`` sub-parser."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices["run"]
    return sub


def parse(tmp_path: Path, toml: str | None, argv: list[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse ``imagebatch run jobs.csv ARGV`` with ``toml`` as --config (if given), as main() does."""
    full = ["run", "jobs.csv", *argv]
    if toml is not None:
        config = tmp_path / "imagebatch.toml"
        config.write_text(toml, encoding="utf-8")
        full += ["--config", str(config)]
    parser = build_parser()
    return apply_config(parser, parser.parse_args(full), full, environ)


FILE = """
rate = 5
concurrency = 3
wait = true
endpoint = "http://127.0.0.1:1"

[nightly]
rate = 7
max-stopped = "20%"

[weekly]
max_stopped = 4
wait = false
"""


@pytest.mark.parametrize(
    ("toml", "argv", "environ", "expected"),
    [
        pytest.param(None, [], {}, {"rate": None, "wait": None, "endpoint": None}, id="no-file-defaults"),
        pytest.param(FILE, [], {}, {"rate": 5.0, "concurrency": 3, "wait": True}, id="file-over-defaults"),
        pytest.param(FILE, ["--rate", "9"], {}, {"rate": 9.0, "concurrency": 3}, id="command-line-over-file"),
        pytest.param(FILE, ["--no-wait"], {}, {"wait": False}, id="negated-flag-over-file"),
        pytest.param(
            FILE, ["--profile", "nightly"], {}, {"rate": 7.0, "concurrency": 3, "max_stopped": "20%"}, id="profile"
        ),
        pytest.param(
            FILE, ["--profile", "weekly"], {}, {"rate": 5.0, "max_stopped": "4", "wait": False}, id="profile-inherits"
        ),
        pytest.param(FILE, ["--profile", "nightly", "--rate", "2"], {}, {"rate": 2.0}, id="command-line-over-profile"),
        pytest.param(FILE, [], {}, {"endpoint": "http://127.0.0.1:1"}, id="endpoint-from-file"),
        pytest.param(FILE, [], {"ZENLAYER_ENDPOINT": "http://127.0.0.1:2"}, {"endpoint": None}, id="env-over-file"),
        pytest.param(
            FILE,
            ["--endpoint", "http://127.0.0.1:3"],
            {"ZENLAYER_ENDPOINT": "http://127.0.0.1:2"},
            {"endpoint": "http://127.0.0.1:3"},
            id="command-line-over-env",
        ),
        pytest.param(FILE, [], {"ZENLAYER_ENDPOINT": " "}, {"endpoint": "http://127.0.0.1:1"}, id="blank-env-ignored"),
    ],
)
def test_precedence_command_line_then_environment_then_file_then_defaults(
    tmp_path: Path, toml: str | None, argv: list[str], environ: dict[str, str], expected: dict[str, Any]
) -> None:
    """Each setting comes from the first layer that has it: command line, environment, file, defaults."""
    args = parse(tmp_path, toml, argv, environ)
    for dest, value in expected.items():
        assert getattr(args, dest, None) == value, dest


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        pytest.param("max-stopped = 5\n", {"max_stopped": "5"}, id="dashes"),
        pytest.param("max_stopped = 5\n", {"max_stopped": "5"}, id="underscores"),
        pytest.param('max-stopped = "10%"\n', {"max_stopped": "10%"}, id="percentage"),
        pytest.param("timeout = 30\n", {"total_timeout": 30.0}, id="flag-name-not-field-name"),
        pytest.param('format = "jsonl"\n', {"fmt": "jsonl"}, id="choices"),
        pytest.param("stop-running = true\nforce_stop = true\n", {"stop_running": True, "force_stop": True}, id="bool"),
        pytest.param('out = "runs/nightly"\nresume = true\n', {"out": Path("runs/nightly"), "resume": True}, id="out"),
        pytest.param("seed = 7\nquiet = true\n", {"seed": 7, "quiet": True}, id="seed-quiet"),
        pytest.param("backoff-cap = 1e2\n", {"backoff_cap": 100.0}, id="float-exponent"),
    ],
)
def test_values_are_read_by_long_name_and_converted_as_flags(
    tmp_path: Path, toml: str, expected: dict[str, Any]
) -> None:
    """Keys are long flag names with - or _, and values come out as the flag's parser makes them."""
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    assert load_config(path, profile=None, flags=file_flags(run_parser())) == expected


def test_every_run_flag_can_be_set_from_a_file_with_its_default(tmp_path: Path) -> None:
    """Each long flag of `imagebatch run` is settable, and its default written in TOML reads back unchanged."""
    flags = file_flags(run_parser())
    longs = {
        s[2:]
        for a in run_parser()._actions
        for s in a.option_strings
        if s.startswith("--") and not s.startswith("--no-") and s not in ("--help", "--config", "--profile")
    }
    assert set(flags) == longs
    defaults = RunOptions()
    for name, flag in flags.items():
        default = getattr(defaults, flag.dest, None)
        if default is None or flag.kind == "boolean":
            continue
        value = json.dumps(default)  # a TOML literal for a number or a string
        path = tmp_path / f"{name}.toml"
        path.write_text(f"{name} = {value}\n", encoding="utf-8")
        assert load_config(path, profile=None, flags=flags)[flag.dest] == default, name


BAD = [
    pytest.param("rate = 5\nbogus = 1\n", None, "c.toml:2: unknown key 'bogus'", id="unknown-key"),
    pytest.param(
        "[nightly]\nrate = 5\n\n[weekly]\nratte = 5\n",
        "weekly",
        "c.toml:5: [weekly] unknown key 'ratte'",
        id="unknown-in-profile",
    ),
    pytest.param('\nrate = "fast"\n', None, "c.toml:2: rate: expected a number, got a string", id="string-for-number"),
    pytest.param(
        "concurrency = true\n", None, "c.toml:1: concurrency: expected an integer, got a boolean", id="bool-for-int"
    ),
    pytest.param("concurrency = 2.5\n", None, "concurrency: expected an integer, got a number", id="float-for-int"),
    pytest.param(
        'wait = "yes"\n', None, "c.toml:1: wait: expected a boolean (true or false), got a string", id="text-for-bool"
    ),
    pytest.param("rate = 2030-01-31\n", None, "c.toml:1: rate: expected a number, got a date", id="date"),
    pytest.param("max-stopped = [1]\n", None, 'expected an integer or a string like "10%", got an array', id="array"),
    pytest.param(
        "rate = 0.001\n", None, "c.toml:1: rate: '0.001' is below 0.01 requests a second", id="refused-by-flag"
    ),
    pytest.param("concurrency = 0\n", None, "concurrency: '0' must be at least 1", id="zero-concurrency"),
    pytest.param('format = "xml"\n', None, "format: 'xml' is not one of csv, json, jsonl", id="not-a-choice"),
    pytest.param('out = " "\n', None, "out: must name a directory", id="blank-out"),
    pytest.param(
        "rate = 5\n\n[nightly]\nrate = \n", None, "c.toml:4: not valid TOML: Invalid value (column 8)", id="bad-toml"
    ),
    pytest.param(
        "rate = 5\n", "nightly", "c.toml: no profile [nightly] (--profile); the file's profiles: none", id="no-profile"
    ),
    pytest.param("[a]\n[b]\n", "c", "no profile [c] (--profile); the file's profiles: [a], [b]", id="no-such-profile"),
    pytest.param("[nightly.deep]\nrate = 1\n", "nightly", "[nightly] [deep]: profiles cannot be nested", id="nested"),
    pytest.param(
        "max-stopped = 3\nmax_stopped = 4\n",
        None,
        "c.toml:2: 'max_stopped' is given twice (also as 'max-stopped')",
        id="twice",
    ),
    pytest.param('profile = "x"\n', None, "c.toml:1: 'profile' cannot be set in the file", id="profile-key"),
    pytest.param(
        'config = "x"\n', None, "'config' cannot be set in the file: it names the file itself", id="config-key"
    ),
]


@pytest.mark.parametrize(("toml", "profile", "message"), BAD)
def test_bad_files_are_clear_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, profile: str | None, message: str
) -> None:
    """A bad config file: exit 2 and one line naming file, line, profile, key and expected type; no traceback."""
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    jobs = write_csv(tmp_path / "jobs.csv", ["1"])
    argv = ["run", str(jobs), "--out", str(tmp_path / "out"), "--config", str(path)]
    assert main(argv + (["--profile", profile] if profile else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("imagebatch: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing is started"


SECRET = "s3cr3t-VALUE-never-shown"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("access_key_id", id="access-key-id"),
        pytest.param("access-key-secret", id="access-key-secret"),
        pytest.param("access_key_password", id="terraform-password"),
        pytest.param("token", id="token"),
        pytest.param("ZENLAYER_TOKEN", id="variable-name"),
    ],
)
def test_secrets_are_refused_and_never_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    """A credential in the file is refused, pointing to the environment and zeno's file, without its value."""
    path = tmp_path / "c.toml"
    path.write_text(f'rate = 5\n\n[nightly]\n{key} = "{SECRET}"\n', encoding="utf-8")
    jobs = write_csv(tmp_path / "jobs.csv", ["1"])
    assert main(["run", str(jobs), "--config", str(path), "--profile", "nightly"]) == 2
    err = capsys.readouterr().err
    assert f"c.toml:4: [nightly] {key!r}: secrets do not go in a config file" in err
    assert "ZENLAYER_ACCESS_KEY_ID" in err
    assert "~/.zenlayer/credentials.json" in err
    assert SECRET not in err


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        pytest.param(None, ["--config", "{tmp}/absent.toml"], "cannot read config file", id="missing-file"),
        pytest.param(
            b"rate = 5\n\xff\n", ["--config", "{tmp}/c.toml"], "c.toml: not UTF-8 text (byte 9)", id="not-utf8"
        ),
        pytest.param(None, ["--profile", "nightly"], "--profile 'nightly' needs --config", id="profile-alone"),
        pytest.param(b"", ["--config", "{tmp}"], "cannot read config file", id="a-directory"),
    ],
)
def test_unreadable_files_and_a_lone_profile_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: bytes | None, argv: list[str], message: str
) -> None:
    """A missing, non-UTF-8 or directory config, or --profile without --config: exit 2 with what is wrong."""
    if setup is not None:
        (tmp_path / "c.toml").write_bytes(setup)
    jobs = write_csv(tmp_path / "jobs.csv", ["1"])
    assert main(["run", str(jobs), *(a.format(tmp=tmp_path) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """A fake-server subprocess with 20 generated instances."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch", "fake-server", "--instances", "20", "--image-ready-seconds", "0"],
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


@pytest.mark.usefixtures("creds_env")
def test_a_run_takes_its_options_from_the_profile_and_keeps_them_in_run_json(
    tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run over loopback with --config/--profile: the effective options in run.json, flags winning, no secret."""
    config = tmp_path / "imagebatch.toml"
    config.write_text(
        f'endpoint = "{fake_url}"\nrate = 300\nquiet = true\n\n[nightly]\nconcurrency = 3\nlookup-delay = 2\n',
        encoding="utf-8",
    )
    jobs = write_csv(tmp_path / "jobs.csv", [instance_id(n) for n in range(1, 6)])
    out = tmp_path / "out"
    argv = ["run", str(jobs), "--out", str(out), "--config", str(config), "--profile", "nightly", "--rate", "400"]
    assert main(argv) == 0
    assert "exit code: 0" in capsys.readouterr().out
    header = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert header["options"]["rate"] == 400.0
    assert header["options"]["concurrency"] == 3
    assert header["options"]["lookup_delay"] == 2.0
    assert DEFAULT_ACCESS_KEY_SECRET not in (out / "run.json").read_text(encoding="utf-8")


@pytest.mark.usefixtures("creds_env")
def test_a_resume_takes_the_files_values_like_flags(
    tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file's values count as given: a resume with a changed file says which option it changes."""
    config = tmp_path / "imagebatch.toml"
    config.write_text(f'endpoint = "{fake_url}"\nrate = 300\nquiet = true\n', encoding="utf-8")
    jobs = write_csv(tmp_path / "jobs.csv", [instance_id(n) for n in range(6, 9)])
    out = tmp_path / "out"
    argv = ["run", str(jobs), "--out", str(out), "--config", str(config), "--resume"]
    assert main(argv) == 0
    config.write_text(f'endpoint = "{fake_url}"\nrate = 200\nquiet = true\n', encoding="utf-8")
    capsys.readouterr()
    assert main(argv) == 0
    assert "this resume changes --rate 200 (was 300)" in capsys.readouterr().err
