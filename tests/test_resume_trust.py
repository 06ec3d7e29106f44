"""Resume semantics and the run directory: snapshots, kept options, whole-run summaries, stdin."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch.cli import main
from batch.errors import RunDirectoryError
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from batch.fake.fleet import instance_id
from batch.journal import encode_record
from batch.options import RunOptions, resume_options
from batch.run import Run
from batch.run_cmd import default_out as _default_out

from .conftest import CREDS, FakeFactory, instances, write_csv
from .test_crash_safety import ENV, fake_factory, results_of, start_run, wait_for_results

__all__ = ["fake_factory"]  # a fixture used here, defined with the crash-safety tests

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
pytestmark = pytest.mark.anyio


# ----- options kept in run.json --------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "given", "explicit", "want", "changed"),
    [
        pytest.param({"rate": 7.0, "wait": True}, RunOptions(), set(), {"rate": 7.0, "wait": True}, [], id="kept"),
        pytest.param(
            {"rate": 7.0}, RunOptions(rate=9.0), {"rate"}, {"rate": 9.0}, ["--rate 9 (was 7)"], id="given-again"
        ),
        pytest.param(
            {"wait": True}, RunOptions(wait=False), {"wait"}, {"wait": False}, ["--wait off (was on)"], id="no-wait"
        ),
        pytest.param({"rate": 7.0}, RunOptions(rate=7.0), {"rate"}, {"rate": 7.0}, [], id="same-value"),
        pytest.param({}, RunOptions(rate=3.0), set(), {"rate": 3.0}, [], id="older-run-without-options"),
    ],
)
def test_resume_options_table(
    stored: dict[str, Any], given: RunOptions, explicit: set[str], want: dict[str, Any], changed: list[str]
) -> None:
    """A resume takes the stored option unless the flag is given again, and says what it changed."""
    options, said = resume_options(stored, given, explicit)
    assert {k: getattr(options, k) for k in want} == want
    assert said == changed


@pytest.mark.parametrize(
    ("stored", "given", "explicit", "needle"),
    [
        pytest.param({"name_template": "{instanceId}"}, RunOptions(name_template="x{instanceId}"), {"name_template"},
                     "--name-template 'x{instanceId}' differs", id="template"),
        pytest.param({"rate": "fast"}, RunOptions(), set(), "option 'rate' holds 'fast'", id="edited-by-hand"),
    ],
)
def test_resume_options_refused(stored: dict[str, Any], given: RunOptions, explicit: set[str], needle: str) -> None:
    """What an image is cannot change on resume; a hand-edited value of the wrong kind is named."""
    with pytest.raises(RunDirectoryError, match=re.escape(needle)):
        resume_options(stored, given, explicit)


async def test_resume_keeps_the_runs_options(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--wait and --rate are kept in run.json; a resume without them uses them, one with a flag says so."""
    ids = [f"i-{n}" for n in range(4)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0.05})
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    first = Run(job_list, tmp_path / "run", RunOptions(rate=50, wait=True, poll_interval=0.05), credentials=CREDS,
                endpoint=fake.url)
    await first.execute()
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["options"]
    assert (stored["rate"], stored["wait"], stored["poll_interval"]) == (50, True, 0.05)
    notes: list[str] = []
    again = Run(None, tmp_path / "run", RunOptions(resume=True, rate=20), credentials=CREDS, endpoint=fake.url,
                notice=notes.append)
    outcome = await again.execute()
    assert outcome.exit_code == 0
    assert (again.options.wait, again.options.rate, again.options.poll_interval) == (True, 20, 0.05)
    assert notes == ["this resume changes --rate 20 (was 50)"]


# ----- exit codes and summaries of resumed runs ----------------------------------------------


async def test_resume_of_a_finished_run_exits_with_what_its_jobs_give(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A finished run whose earlier process was signalled resumes with 0, not the signal's 143."""
    ids = [f"i-{n}" for n in range(3)]
    fake = await make_fake(instances(*ids))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    await Run(job_list, tmp_path / "run", RunOptions(rate=50), credentials=CREDS, endpoint=fake.url).execute()
    summary_path = tmp_path / "run" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["exitCode"] = 143  # as if SIGTERM had come after the last job ended
    summary_path.write_text(json.dumps(summary))
    calls = sum(fake.calls.values())
    again = Run(job_list, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=fake.url)
    outcome = await again.execute()
    assert outcome.exit_code == 0
    assert json.loads(summary_path.read_text())["exitCode"] == 0
    assert sum(fake.calls.values()) == calls  # nothing sent


def test_summary_covers_every_segment_after_kill(tmp_path: Path, fake_factory: Any) -> None:
    """After a kill -9 and a resume, summary.json counts both processes' calls, wall time and first start."""
    fake = fake_factory("--instances", "150", "--image-ready-seconds", "0", "--latency", "0.02")
    ids = [instance_id(n) for n in range(1, 151)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    first = start_run(job_list, out, fake.url, "--rate", "100")
    wait_for_results(out, 30)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = start_run(job_list, out, fake.url, "--rate", "200")
    second.communicate(timeout=90)
    assert second.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    seen = fake.inspect()
    server_calls = sum(seen["calls"].values())
    assert len(summary["segments"]) == 2
    assert summary["segments"][0]["exitCode"] is None  # killed: it never said how it ended
    # Calls in flight at the kill, or answered in its last 20 ms, are the only ones not counted.
    assert server_calls - 16 <= summary["apiCalls"]["total"] <= server_calls
    assert summary["startedAt"] == summary["segments"][0]["startedAt"]
    assert summary["wallSeconds"] >= summary["segments"][0]["wallSeconds"] > 0
    assert (summary["jobs"], summary["ended"], summary["pending"]) == (150, 150, 0)


# ----- the snapshot ----------------------------------------------------------------------------


async def test_resume_without_a_job_list_reads_the_runs_copy(tmp_path: Path, make_fake: FakeFactory) -> None:
    """The run keeps a copy of its list; --resume --out alone continues from it, even if the file is gone."""
    ids = [f"i-{n}" for n in range(5)]
    fake = await make_fake(instances(*ids))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    await Run(job_list, tmp_path / "run", RunOptions(rate=50), credentials=CREDS, endpoint=fake.url).execute()
    assert (tmp_path / "run" / "job-list.csv").read_bytes() == job_list.read_bytes()
    job_list.unlink()
    outcome = await Run(None, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=fake.url).execute()
    assert outcome.exit_code == 0
    assert outcome.summary["jobs"] == 5


def test_resume_names_rows_added_and_removed(tmp_path: Path, fake_factory: Any) -> None:
    """A list given again with rows added and removed is refused, each kind named with its lines."""
    fake = fake_factory("--instances", "6", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 7)]
    job_list = write_csv(tmp_path / "jobs.csv", ids[:4])
    out = tmp_path / "run"
    start_run(job_list, out, fake.url).communicate(timeout=60)
    write_csv(job_list, ids[1:])
    proc = start_run(job_list, out, fake.url)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"2 row(s) added: line 5: '{ids[4]}'; line 6: '{ids[5]}'" in err
    assert f"1 row(s) removed: copy line 2: '{ids[0]}'" in err
    assert "Traceback" not in err


def test_run_reads_standard_input(tmp_path: Path, fake_factory: Any) -> None:
    """`run -` reads the list from stdin once, keeps it as the run's copy, and resumes from the copy."""
    fake = fake_factory("--instances", "3", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 4)]
    out = tmp_path / "run"
    text = "instanceId\n" + "".join(f"{i}\n" for i in ids)
    cmd = [sys.executable, "-m", "batch", "run", "-", "--format", "csv", "--out", str(out), "--endpoint", fake.url,
           "--quiet"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["instanceId"] for r in results_of(out)) == ids
    assert json.loads((out / "run.json").read_text())["jobList"] == "-"
    again = subprocess.run([*cmd[:4], "--out", str(out), "--endpoint", fake.url, "--resume", "--quiet"],
                           capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert again.returncode == 0, again.stderr


def test_stdin_needs_a_format(tmp_path: Path) -> None:
    """`validate -` without --format says so (no name to tell the format from)."""
    proc = subprocess.run([sys.executable, "-m", "batch", "validate", "-"], input="instanceId\nx1\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--format" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_validate_reads_a_pipe(name: str) -> None:
    """`validate -` and `validate /dev/stdin` read a pipe once and check every row (not 'the file is empty')."""
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "validate", name, "--format", "csv"],
        input="instanceId\ni-1\nbad id!\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    label = "<stdin>" if name == "-" else name
    assert f"{label}:3: field 'instanceId'" in proc.stderr
    assert "empty" not in proc.stderr


# ----- flags and the run directory ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--out", ""], "an empty --out would write into the current one", id="empty-out"),
        pytest.param(["--rate", "1e-300"], "below 0.01 requests a second", id="tiny-rate"),
        pytest.param(["--resume"], "--resume needs --out", id="resume-without-out"),
    ],
)
def test_bad_run_flags_are_refused(
    tmp_path: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags no run can use end with exit 2 and a message naming the flag; nothing is written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)
    job_list = write_csv(tmp_path / "jobs.csv", ["i-1"])
    assert _exit_code_of(["run", str(job_list), "--endpoint", "http://127.0.0.1:9", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.csv"]


def _exit_code_of(argv: list[str]) -> int | str | None:
    """main()'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


def test_default_run_directories_are_unique() -> None:
    """Two runs started in the same second get different default directories."""
    first, second = _default_out(), _default_out()
    assert first != second
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", first.name)


def test_corrupt_record_in_the_middle_is_reported(tmp_path: Path, fake_factory: Any) -> None:
    """A damaged journal record followed by good ones is named with its byte offset on resume."""
    fake = fake_factory("--instances", "4", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 5)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    start_run(job_list, out, fake.url).communicate(timeout=60)
    journal = out / "journal.log"
    size = journal.stat().st_size
    with journal.open("ab") as handle:
        handle.write(b"0badc0de {not a record}\n")
        handle.write(encode_record({"type": "intent", "instanceId": ids[0], "imageName": f"{ids[0]}-x"}))
    proc = start_run(job_list, out, fake.url)
    _, err = proc.communicate(timeout=60)
    assert f"a damaged record at byte {size} was skipped" in err


def test_run_warns_about_a_byte_order_mark(tmp_path: Path, fake_factory: Any) -> None:
    """`run` prints the BOM warning that `validate` prints."""
    fake = fake_factory("--instances", "2", "--image-ready-seconds", "0")
    job_list = tmp_path / "jobs.csv"
    job_list.write_bytes(b"\xef\xbb\xbfinstanceId\n" + instance_id(1).encode() + b"\n")
    proc = start_run(job_list, tmp_path / "run", fake.url)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "byte-order mark" in err


async def test_times_are_rfc3339_everywhere(tmp_path: Path, make_fake: FakeFactory) -> None:
    """results.jsonl, summary.json, run.json and events.jsonl write times one way: RFC 3339 UTC text."""
    fake = await make_fake(instances("i-1"))
    job_list = write_csv(tmp_path / "jobs.csv", ["i-1"])
    await Run(job_list, tmp_path / "run", RunOptions(), credentials=CREDS, endpoint=fake.url).execute()
    result = json.loads((tmp_path / "run" / "results.jsonl").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    header = json.loads((tmp_path / "run" / "run.json").read_text())
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    stamps = [result["startedAt"], result["endedAt"], summary["startedAt"], summary["endedAt"], header["createdAt"]]
    for text in stamps + [e["ts"] for e in events]:
        assert RFC3339.fullmatch(text), text


def test_no_run_files_left_when_the_list_is_bad(tmp_path: Path) -> None:
    """A new run whose list does not validate leaves no directory and no copy behind."""
    job_list = tmp_path / "jobs.csv"
    job_list.write_text("instanceId\nbad id!\n")
    env = {**os.environ, "ZENLAYER_ACCESS_KEY_ID": "k", "ZENLAYER_ACCESS_KEY_SECRET": "s"}
    proc = subprocess.run([sys.executable, "-m", "batch", "run", str(job_list), "--out", str(tmp_path / "run"),
                           "--endpoint", "http://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert not (tmp_path / "run").exists()


# ----- resume after a fatal stop ----------------------------------------------------------------


async def test_resume_after_a_quota_stop_runs_the_rest(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run stopped by a full quota (exit 3) is not finished: once the quota is raised, --resume
    runs the jobs the stop left and ends 0, one image each."""
    ids = [f"i-{n}" for n in range(12)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_quota": 5})
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    first = await Run(job_list, tmp_path / "run", RunOptions(rate=50, concurrency=2), credentials=CREDS,
                      endpoint=fake.url).execute()
    assert first.exit_code == 3
    assert first.summary["pending"] > 0
    fake.cloud.image_quota = None
    again = await Run(job_list, tmp_path / "run", RunOptions(resume=True), credentials=CREDS,
                      endpoint=fake.url).execute()
    assert again.exit_code == 0
    assert again.summary["byStatus"]["succeeded"] == 12
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["instanceId"] for r in lines) == sorted(ids)
    assert fake.inspect()["duplicateInstances"] == []


async def test_resume_after_bad_credentials_runs_everything(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run stopped at once by refused credentials is resumed with good ones and images every instance."""
    from batch import Credentials

    ids = [f"i-{n}" for n in range(6)]
    fake = await make_fake(instances(*ids))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    bad = Credentials(CREDS.access_key_id, "not-the-secret")
    first = await Run(job_list, tmp_path / "run", RunOptions(rate=50), credentials=bad, endpoint=fake.url).execute()
    assert first.exit_code == 3
    again = await Run(job_list, tmp_path / "run", RunOptions(resume=True), credentials=CREDS,
                      endpoint=fake.url).execute()
    assert again.exit_code == 0
    assert again.summary["byStatus"]["succeeded"] == 6
    assert fake.inspect()["images"] == 6


async def test_resume_talks_to_the_api_the_run_started_with(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A resume given no endpoint (no flag, no ZENLAYER_ENDPOINT) uses the one in run.json."""
    ids = [f"i-{n}" for n in range(3)]
    fake = await make_fake(instances(*ids))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    await Run(job_list, tmp_path / "run", RunOptions(rate=50), credentials=CREDS, endpoint=fake.url).execute()
    (tmp_path / "run" / "summary.json").unlink()
    again = Run(None, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=None)
    outcome = await again.execute()
    assert again.endpoint == fake.url
    assert outcome.exit_code == 0


def test_validate_checks_names_made_with_run_id_at_their_real_length(tmp_path: Path) -> None:
    """`validate` fills {run_id} with a run id of the real shape: no false 'too short' problem, and a
    name that only the real run id makes too long is reported."""
    short = write_csv(tmp_path / "short.csv", ["i-1"])
    assert main(["validate", str(short), "--name-template", "x{run_id}"]) == 0
    long_id = "i" * 40
    long = write_csv(tmp_path / "long.csv", [long_id])
    assert main(["validate", str(long), "--name-template", "{instanceId}-{run_id}"]) == 2


def test_validate_stdin_without_format_names_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    """`validate -` without --format names <stdin> in its message, not '.'."""
    assert _exit_code_of(["validate", "-"]) == 2
    err = capsys.readouterr().err
    assert "<stdin>" in err
    assert ".:" not in err


def test_demo_refuses_an_empty_out(capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --out ''` is refused like `run --out ''`."""
    assert _exit_code_of(["demo", "--out", ""]) == 2
    assert "empty --out" in capsys.readouterr().err


def test_resume_reads_a_list_given_in_another_format_as_that_format(tmp_path: Path, fake_factory: Any) -> None:
    """A CSV run resumed with the same jobs as JSON is the same list (no 'unknown column' noise)."""
    fake = fake_factory("--instances", "3", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 4)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    start_run(job_list, out, fake.url).communicate(timeout=60)
    as_json = tmp_path / "jobs.json"
    as_json.write_text(json.dumps([{"instanceId": i} for i in ids]))
    proc = start_run(as_json, out, fake.url)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "unknown column" not in err


def test_a_signalled_segment_keeps_its_exit_code(tmp_path: Path, fake_factory: Any) -> None:
    """SIGTERM, then a resume to the end: summary.json's first segment says 143, the last 0."""
    fake = fake_factory("--instances", "200", "--image-ready-seconds", "0", "--latency", "0.02")
    ids = [instance_id(n) for n in range(1, 201)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    first = start_run(job_list, out, fake.url, "--rate", "50")
    wait_for_results(out, 20)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert first.returncode == 143
    second = start_run(job_list, out, fake.url, "--rate", "400")
    second.communicate(timeout=90)
    assert second.returncode == 0
    segments = json.loads((out / "summary.json").read_text())["segments"]
    assert [s["exitCode"] for s in segments] == [143, 0]


def test_format_on_resume_names_the_given_lists_format() -> None:
    """--format on a resume is the format of the list given to compare; the copy keeps its own."""
    options, changed = resume_options({"fmt": "csv"}, RunOptions(fmt="json"), {"fmt"})
    assert options.fmt == "csv"
    assert changed == []


def test_a_changed_copy_is_refused_on_resume(tmp_path: Path, fake_factory: Any) -> None:
    """Someone edits the run's own copy of its list: the resume refuses (its checksum is in run.json)."""
    fake = fake_factory("--instances", "3", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 4)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    start_run(job_list, out, fake.url).communicate(timeout=60)
    with (out / "job-list.csv").open("a") as handle:
        handle.write(instance_id(9) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "run", "--out", str(out), "--resume", "--endpoint", fake.url, "--quiet"],
        capture_output=True, text=True, env=ENV, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "was changed after the run started" in proc.stderr


def test_json_on_stdin_resumes_with_its_format(tmp_path: Path, fake_factory: Any) -> None:
    """A JSON run from stdin, resumed with the same JSON on stdin and --format json, is the same list."""
    fake = fake_factory("--instances", "2", "--image-ready-seconds", "0")
    ids = [instance_id(n) for n in range(1, 3)]
    text = json.dumps([{"instanceId": i} for i in ids])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "batch", "run", "-", "--format", "json", "--out", str(out), "--endpoint", fake.url,
           "--quiet"]
    first = subprocess.run(cmd, input=text, capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*cmd, "--resume"], input=text, capture_output=True, text=True, env=ENV, timeout=60,
                           check=False)
    assert again.returncode == 0, again.stderr


async def test_rows_appended_to_the_runs_copy_are_not_sent(
    tmp_path: Path, make_fake: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending to the run's own copy mid-run: the run stops (exit 3) at the first row it did not
    validate; nothing past the validated rows is sent, and no count goes negative."""
    import anyio

    from batch.sources import joblist

    # A list too long to keep from its validation is read again: that read meets the new rows.
    monkeypatch.setattr(joblist, "KEEP_JOBS", 0)

    ids = [f"i-{n}" for n in range(40)]
    extra = [f"x-{n}" for n in range(10)]
    fake = await make_fake(instances(*ids, *extra))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    run = Run(job_list, tmp_path / "run", RunOptions(rate=20, seed=1), credentials=CREDS, endpoint=fake.url)

    async def grow_the_copy() -> None:
        # Polls outside state (a file, the fake's counters): there is no event to wait on.
        while not fake.calls.get("CreateImage"):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        with (tmp_path / "run" / "job-list.csv").open("a") as handle:
            handle.write("".join(f"{i}\n" for i in extra))

    async with anyio.create_task_group() as tg:
        tg.start_soon(grow_the_copy)
        outcome = await run.execute()
    assert outcome.exit_code == 3
    assert "did not validate" in outcome.summary["stoppedBy"]
    assert outcome.summary["pending"] >= 0
    assert not any(i.startswith("x-") for i in fake.inspect()["createdPerInstance"])


def test_lookup_delay_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """--lookup-delay 1e9 (a run that never ends after a lost answer) is refused."""
    from batch.errors import UsageError

    with pytest.raises(UsageError, match="--lookup-delay"):
        RunOptions(lookup_delay=1e9).check()
