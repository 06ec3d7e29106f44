"""What people read: the progress line, the end-of-run summary, error messages, exit codes."""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.cli import EXIT_CODES_HELP, main
from batch.fake import DEFAULT_ACCESS_KEY_ID
from batch.fake.fleet import instance_id
from batch.report import ProgressPrinter, advice_for, format_seconds, render_progress, render_summary, resume_command
from batch.run import Progress

from .conftest import write_csv

ROOT = Path(__file__).parent.parent

SNAP = Progress(
    total=10,
    by_status={"succeeded": 4, "failed": 1},
    in_flight=2,
    waiting=1,
    awaiting_images=0,
    api_calls=7,
    elapsed=3.0,
    rate=10.0,
    requests_in_flight=2,
)


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Yes, a terminal."""
        return True


# ----- progress ----------------------------------------------------------------------------


def test_progress_printer_on_a_terminal_and_in_a_log() -> None:
    """On a terminal one line is rewritten; in a log (cron) a plain line every 10 s at most."""
    tty = Tty()
    ProgressPrinter(tty)(SNAP)
    assert tty.getvalue().startswith("\r\x1b[2K[   3.0s] 5/10 ended (ok 4, failed 1, skipped 0)")
    log = io.StringIO()
    printer = ProgressPrinter(log)
    printer(SNAP)
    printer(dataclasses.replace(SNAP, elapsed=5.0))
    assert log.getvalue().count("\n") == 1
    assert "\x1b" not in log.getvalue()


def test_a_log_gets_a_line_on_every_change_of_phase() -> None:
    """In a log, the end of the listing is shown at once, not up to 10 s later."""
    log = io.StringIO()
    printer = ProgressPrinter(log)
    printer(dataclasses.replace(SNAP, phase="listing", phase_detail="page 1, 1,000 images", elapsed=1.0))
    printer(dataclasses.replace(SNAP, phase="running", elapsed=2.0))
    printer(dataclasses.replace(SNAP, phase="running", elapsed=3.0))
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert "listing existing images" in lines[0]
    assert "5/10 ended" in lines[1]


def test_terminal_line_is_ended_when_the_run_ends_or_on_finish() -> None:
    """The rewritten line gets its newline at the end (also after a stop), so the summary starts on its own line."""
    tty = Tty()
    printer = ProgressPrinter(tty)
    printer(SNAP)
    assert not tty.getvalue().endswith("\n")
    printer(dataclasses.replace(SNAP, phase="ended"))
    assert tty.getvalue().endswith("\n")
    printer.finish()
    assert not tty.getvalue().endswith("\n\n"), "finish() after the end adds no empty line"
    tty = Tty()
    printer = ProgressPrinter(tty)
    printer(SNAP)
    printer.finish()
    assert tty.getvalue().endswith("\n")


@pytest.mark.parametrize(
    ("snap", "present", "absent"),
    [
        pytest.param(
            dataclasses.replace(
                SNAP, phase="listing", phase_detail="page 3, 2,000 images", by_status={}, total=1, api_calls=3
            ),
            ["listing existing images: page 3, 2,000 images", "3 calls"],
            ["0/1", "done", "ended ("],
            id="listing-shows-phase-not-zero-done",
        ),
        pytest.param(
            dataclasses.replace(SNAP, phase="starting", by_status={}),
            ["starting"],
            ["0/10"],
            id="starting",
        ),
        pytest.param(
            dataclasses.replace(SNAP, in_flight=93, requests_in_flight=8, awaiting_images=85),
            ["requests in flight 8", "images awaited 85"],
            ["in flight 93"],
            id="wait-splits-requests-from-awaited-images",
        ),
        pytest.param(
            dataclasses.replace(SNAP, awaiting_images=0),
            ["requests in flight 2, retrying 1"],
            ["images awaited"],
            id="no-wait-no-awaited-images",
        ),
        pytest.param(
            dataclasses.replace(SNAP, phase="draining", phase_detail="grace 30 s"),
            ["stopping, finishing what is in flight (grace 30 s)", "5/10 ended"],
            [],
            id="draining",
        ),
        pytest.param(
            dataclasses.replace(SNAP, by_status={"succeeded": 4, "unknown": 2, "interrupted": 1}),
            ["7/10 ended", "unknown 2", "interrupted 1"],
            [],
            id="unknown-and-interrupted-counted",
        ),
    ],
)
def test_progress_line(snap: Progress, present: list[str], absent: list[str]) -> None:
    """The progress line says what the run is doing, in words that match the flags."""
    line = render_progress(snap)
    for needle in present:
        assert needle in line
    for needle in absent:
        assert needle not in line


# ----- summary -----------------------------------------------------------------------------


def _summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "runId": "R1",
        "jobList": "jobs.csv",
        "jobs": 600,
        "ended": 600,
        "pending": 0,
        "byStatus": {"succeeded": 600, "failed": 0, "skipped": 0, "unknown": 0, "interrupted": 0},
        "byErrorCode": {},
        "wallSeconds": 3.5,
        "segments": [{"wallSeconds": 3.5}],
        "apiCalls": {"total": 601, "byAction": {}, "byCode": {"OK": 601}},
        "retries": 0,
        "stoppedBy": None,
        "stopCause": None,
        "exitCode": 0,
        "outDir": "runs/x",
    }
    base.update(changes)
    return base


SIGTERM = _summary(ended=120, pending=480, stoppedBy="SIGTERM", exitCode=143)
FATAL_502 = _summary(
    ended=300,
    pending=300,
    stoppedBy="fatal:MALFORMED_RESPONSE",
    exitCode=3,
    stopCause={
        "code": "MALFORMED_RESPONSE",
        "message": "HTTP 502 Bad Gateway after 8 attempts",
        "status": 502,
        "requestId": "T0A1B2C3",
        "action": "CreateImage",
    },
)


@pytest.mark.parametrize(
    ("summary", "present", "absent"),
    [
        pytest.param(
            SIGTERM,
            ["run R1: 120 of 600 ended in 3.5 s", "exit code: 143 (stopped by SIGTERM)", "480 of 600 jobs did not end"],
            ["600 jobs in", "segments"],
            id="sigterm-says-how-many-ended",
        ),
        pytest.param(
            _summary(wallSeconds=725.0, segments=[{}, {}, {}]),
            ["600 of 600 ended in 12 min 5 s over 3 segments"],
            [],
            id="resumed-over-segments",
        ),
        pytest.param(
            FATAL_502,
            [
                "exit code: 3 (stopped by fatal:MALFORMED_RESPONSE)",
                "cause:     MALFORMED_RESPONSE: 'HTTP 502 Bad Gateway after 8 attempts' "
                "(CreateImage, HTTP 502, request id 'T0A1B2C3')",
                "check the endpoint",
                "imagebatch run --out runs/x --resume",
            ],
            [],
            id="fatal-cause-advice-and-resume",
        ),
        pytest.param(
            _summary(
                exitCode=3,
                stoppedBy="fatal:AUTHFAILURE_SIGNATURE_FAILURE",
                stopCause={"code": "AUTHFAILURE_SIGNATURE_FAILURE", "message": "signature mismatch", "status": 401},
            ),
            ["fix the credentials", "ZENLAYER_ACCESS_KEY_ID", "imagebatch run --out runs/x --resume"],
            ["request id"],
            id="auth-failure",
        ),
        pytest.param(
            _summary(
                exitCode=3,
                stoppedBy="fatal:INVALID_IMAGE_QUOTA_EXCEED",
                stopCause={"code": "INVALID_IMAGE_QUOTA_EXCEED", "message": "quota reached"},
            ),
            ["raise the custom-image quota", "delete images", "--resume"],
            [],
            id="quota",
        ),
        pytest.param(
            _summary(exitCode=3, stoppedBy="fatal:AUTHFAILURE_INVALID_AUTHORIZATION"),
            ["fix the credentials", "imagebatch run --out runs/x --resume"],
            ["cause:"],
            id="fatal-without-stop-cause",
        ),
        pytest.param(
            _summary(exitCode=3, stoppedBy="job list changed during the run: jobs.csv:7: field 'instanceId'"),
            ["keep the job list unchanged", "imagebatch run --out runs/x --resume"],
            [],
            id="job-list-changed",
        ),
        pytest.param(
            _summary(exitCode=130, stoppedBy="SIGINT", ended=1, pending=599, outDir="my runs/it's"),
            ["imagebatch run --out 'my runs/it'\"'\"'s' --resume"],
            [],
            id="out-dir-shell-quoted",
        ),
        pytest.param(
            _summary(exitCode=1, byStatus={"succeeded": 599, "failed": 1}, byErrorCode={"X": 1}),
            ["failed           1   (errors: X 1)", "exit code: 1"],
            ["resume", "to do"],
            id="failures-are-not-resumed",
        ),
        pytest.param(
            _summary(byStatus={"succeeded": 590, "unknown": 7, "interrupted": 3}),
            ["unknown          7", "interrupted      3", "--resume looks them up again"],
            [],
            id="unknown-and-interrupted-rows",
        ),
        pytest.param(
            _summary(),
            ["succeeded      600", "results:   runs/x/results.jsonl", "exit code: 0"],
            ["unknown", "interrupted", "to do", "cause"],
            id="clean-run",
        ),
        pytest.param(
            {"runId": "old", "jobs": 2, "pending": 0, "wallSeconds": 1.0, "exitCode": 0},
            ["run old: 2 of 2 ended in 1.0 s", "exit code: 0"],
            ["results:"],
            id="older-summary-missing-keys",
        ),
        pytest.param(
            _summary(
                exitCode=3,
                stoppedBy="fatal:X",
                stopCause={"code": "X", "message": "\x1b[31mred\x1b[0m" + "y" * 5000, "requestId": "T\n1"},
            ),
            ["(5012 bytes)", "\\x1b[31m", "request id 'T\\n1'"],
            ["\x1b", "y" * 500],
            id="server-text-is-clipped-and-escaped",
        ),
    ],
)
def test_summary(summary: dict[str, Any], present: list[str], absent: list[str]) -> None:
    """The summary counts what ended, says why a run stopped, what to do and how to resume."""
    text = render_summary(summary)
    for needle in present:
        assert needle in text
    for needle in absent:
        assert needle not in text


def test_resume_command_is_the_last_line_after_a_stop() -> None:
    """After a stop the very last line is the command to paste."""
    assert render_summary(FATAL_502).splitlines()[-1] == "  imagebatch run --out runs/x --resume"
    assert render_summary(SIGTERM, out_dir=Path("elsewhere")).splitlines()[-1] == (
        "  imagebatch run --out elsewhere --resume"
    )


def test_summary_without_resume_for_runs_that_cannot_resume() -> None:
    """The demo's runs cannot be resumed: no resume command, the advice stays."""
    text = render_summary(FATAL_502, resumable=False)
    assert "--resume" not in text
    assert "to do:     check the endpoint" in text


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        pytest.param("AUTHFAILURE_SIGNATURE_FAILURE", "fix the credentials", id="signature"),
        pytest.param("AUTHFAILURE_INVALID_AUTHORIZATION", "fix the credentials", id="authorization"),
        pytest.param("AUTHFAILURE_UNAUTHORIZED_OPERATION", "fix the credentials", id="permission"),
        pytest.param("AUTHFAILURE_SIGNATURE_EXPIRED", "clock", id="expired"),
        pytest.param("INVALID_IMAGE_QUOTA_EXCEED", "raise the custom-image quota", id="quota"),
        pytest.param("MALFORMED_RESPONSE", "check the endpoint", id="other"),
    ],
)
def test_advice_for(code: str, needle: str) -> None:
    """Each kind of fatal error gets the fix that applies to it."""
    assert needle in advice_for(code)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(3.46, "3.5 s", id="seconds"),
        pytest.param(59.94, "59.9 s", id="under-a-minute"),
        pytest.param(725, "12 min 5 s", id="minutes"),
        pytest.param(7380, "2 h 03 min", id="hours"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    """Durations read as people say them."""
    assert format_seconds(seconds) == text


def test_resume_command_quotes_for_the_shell() -> None:
    """A directory with a space or quote survives a paste into a shell."""
    assert resume_command(Path("runs/a b")) == "imagebatch run --out 'runs/a b' --resume"


# ----- the CLI: exit codes, layering, error messages ---------------------------------------


def _codes(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"\b(\d{1,3})\b", text)}


def test_exit_codes_in_help_match_readme() -> None:
    """--help, the cli docstring and README's table list the same exit codes."""
    import batch.cli

    readme = (ROOT / "README.md").read_text("utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    readme_codes: set[int] = set()
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith("| code"):
            readme_codes |= _codes(row.split("|")[1])
    help_codes = _codes("\n".join(line[:10] for line in EXIT_CODES_HELP.splitlines()[1:]))
    assert readme_codes == help_codes == {0, 1, 2, 3, 4, 5, 130, 143}
    doc = (batch.cli.__doc__ or "").split("Exit codes", 1)[1]
    assert readme_codes <= _codes(doc)


def test_help_shows_the_exit_code_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The epilog keeps its lines (argparse would otherwise run them together)."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "\n  130/143  stopped by SIGINT/SIGTERM" in out


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules a module of the batch package imports."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = f"{base}.{node.module}" if base and node.module else (node.module or base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_nothing_imports_the_cli() -> None:
    """Only the entry point imports batch.cli; demo and report stand below it."""
    importers = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "batch").rglob("*.py"))
        if "batch.cli" in _imports(path) and path.name != "__main__.py"
    ]
    assert importers == []
    assert "batch.report" in _imports(ROOT / "batch" / "demo.py"), "the import walker sees relative imports"


def test_fake_server_on_a_taken_port_is_a_plain_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A port in use: exit 2, the OS's reason, no talk of run files or --resume, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["fake-server", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "address already in use" in err.lower()
    assert "run's files" not in err
    assert "--resume" not in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """A fake-server subprocess with 5 generated instances."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch", "fake-server", "--instances", "5", "--image-ready-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    yield url
    proc.terminate()
    proc.communicate(timeout=20)


def test_unwritable_run_directory_prints_the_resume_command(
    tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run file that cannot be written: exit 3 and the exact command to resume once fixed."""
    monkeypatch.setenv("ZENLAYER_TOKEN", "fake-bearer-token")
    path = write_csv(tmp_path / "jobs.csv", [instance_id(1)])
    out = tmp_path / "out dir"
    (out / "results.jsonl").mkdir(parents=True)
    assert main(["run", str(path), "--out", str(out), "--endpoint", fake_url, "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "cannot write the run's files" in err
    assert f"imagebatch run --out '{out}' --resume" in err


def test_fatal_stop_over_http_prints_advice_and_resume_command(
    tmp_path: Path, fake_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong credentials stop the run (exit 3); the summary says to fix them and how to resume, never the secret."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", "not-the-secret-xyzzy")
    path = write_csv(tmp_path / "jobs.csv", [instance_id(2)])
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--endpoint", fake_url, "--quiet"]) == 3
    printed = capsys.readouterr()
    assert "stopped by fatal:AUTHFAILURE" in printed.out
    assert "fix the credentials" in printed.out
    assert printed.out.rstrip().splitlines()[-1] == f"  imagebatch run --out {out} --resume"
    assert "xyzzy" not in printed.out + printed.err


def test_error_codes_from_the_api_cannot_drive_the_terminal() -> None:
    """An error code with escape and bell characters is shown escaped on the console."""
    summary = {"runId": "R", "jobs": 2, "ended": 2, "byStatus": {"failed": 2}, "exitCode": 1,
               "byErrorCode": {"WEIRD_\x1b]0;pwned\x07": 2}}
    text = render_summary(summary)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "WEIRD_\\x1b]0;pwned\\x07 2" in text


def test_progress_shows_the_fleets_power() -> None:
    """--stop-running: the progress line says how many instances are down, queued, being stopped or
    started, and when the run is restoring power."""
    from batch.report import render_progress
    from batch.run import Progress

    snap = Progress(
        total=10, by_status={"succeeded": 2}, in_flight=5, waiting=0, awaiting_images=0, api_calls=30,
        elapsed=4.0, rate=10.0, power={"down": 3, "queued": 2, "stopping": 1, "starting": 1, "awaiting": 4},
    )
    line = render_progress(snap)
    assert "power: down 3, queued 2, stopping/starting 1/1, waiting on states 4" in line
    restoring = render_progress(dataclasses.replace(snap, phase="restoring power"))
    assert "restoring power: starting the instances this run stopped" in restoring
