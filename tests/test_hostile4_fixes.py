"""Defects a hostile test found in report, inventory, config and their list writing, each pinned."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.cli import main
from batch.client import ZecClient
from batch.config import ConfigError, file_flags, load_config
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance
from batch.inventory import list_instances
from batch.journal import encode_record
from batch.output import cell
from batch.selection import build_selection
from batch.text import clip

from .conftest import CREDS, FakeFactory
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


# 1. --failed-jobs never overwrites the run, nor an existing file without --force


@pytest.mark.anyio
@pytest.mark.parametrize("force", [pytest.param([], id="plain"), pytest.param(["--force"], id="force")])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(lambda run: run / "job-list.csv", id="the-runs-copy"),
        pytest.param(lambda run: run / "retry.csv", id="a-new-file-inside"),
        pytest.param(lambda run: run / "sub" / ".." / "job-list.csv", id="dot-dot"),
        pytest.param("link", id="a-link-into-the-run"),
    ],
)
async def test_failed_jobs_inside_the_run_directory_is_refused(
    run_dir: Path, capsys: pytest.CaptureFixture[str], name: Any, force: list[str]
) -> None:
    """A --failed-jobs path inside RUN_DIR (symlinks followed) is refused, even with --force; the run's files stay."""
    if name == "link":
        path = run_dir.parent / "retry.csv"
        path.symlink_to(run_dir / "job-list.csv")
    else:
        path = name(run_dir)
        (run_dir / "sub").mkdir(exist_ok=True)
    before = _files(run_dir)
    code, out, err = await anyio.to_thread.run_sync(
        lambda: _report(capsys, str(run_dir), "--failed-jobs", str(path), *force)
    )
    assert code == 2
    assert f"--failed-jobs {clip(str(path))}: inside the run directory" in err
    assert "Traceback" not in err
    assert out == ""
    assert _files(run_dir) == before


@pytest.mark.anyio
async def test_failed_jobs_replaces_an_existing_file_only_with_force(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing --failed-jobs file: exit 2 naming it and --force, left as it was; with --force it is replaced."""
    retry = tmp_path / "retry.csv"
    retry.write_text("instanceId\nkeep-me\n")
    code, _, err = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--failed-jobs", str(retry)))
    assert code == 2
    assert f"--failed-jobs {clip(str(retry))}: the file exists; give --force" in err
    assert retry.read_text() == "instanceId\nkeep-me\n"
    code, _, err = await anyio.to_thread.run_sync(
        lambda: _report(capsys, str(run_dir), "--failed-jobs", str(retry), "--force")
    )
    assert code == 0
    assert retry.read_text() == "instanceId\n2\n3\n"


# 5. symlinks are followed, special files refused


@pytest.mark.anyio
async def test_failed_jobs_through_a_symlink_writes_its_target(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--failed-jobs LINK writes the file the link names (atomically there) and the link stays a link."""
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    link = tmp_path / "retry.csv"
    link.symlink_to(elsewhere / "retry.csv")
    code, _, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--failed-jobs", str(link)))
    assert code == 0
    assert link.is_symlink()
    assert (elsewhere / "retry.csv").read_text() == "instanceId\n2\n3\n"
    assert os.listdir(elsewhere) == ["retry.csv"]  # no temporary file left behind


@pytest.mark.anyio
async def test_inventory_through_a_symlink_writes_its_target(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inventory -o LINK replaces the link's target, not the link."""
    fake = await make_fake([FakeInstance("1"), FakeInstance("2")])
    target = tmp_path / "shared" / "fleet.csv"
    target.parent.mkdir()
    target.write_text("instanceId\nold\n")
    link = tmp_path / "fleet.csv"
    link.symlink_to(target)
    assert await _cli("inventory", "-o", str(link), "--endpoint", fake.url) == 0
    assert link.is_symlink()
    assert target.read_text().splitlines()[1:] == ["1,rg-default,SEL-A", "2,rg-default,SEL-A"]


def _fifo(tmp_path: Path) -> Path:
    """A named pipe: a special file like /dev/stdout (a real device is not named: a regression would replace it)."""
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


def _link_to_fifo(tmp_path: Path) -> Path:
    """A symlink to a named pipe."""
    link = tmp_path / "link.csv"
    link.symlink_to(_fifo(tmp_path))
    return link


@pytest.mark.anyio
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_fifo, id="fifo"),
        pytest.param(_link_to_fifo, id="link-to-fifo"),
        pytest.param(lambda p: p, id="a-directory"),
    ],
)
async def test_inventory_refuses_a_special_file_before_any_call(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any
) -> None:
    """inventory -o on a device, FIFO or directory: exit 2 'not a regular file', no API call, the node intact."""
    fake = await make_fake([FakeInstance("1")])
    out = make(tmp_path)
    assert await _cli("inventory", "-o", str(out), "--format", "csv", "--endpoint", fake.url) == 2
    err = capsys.readouterr().err
    assert f"-o {clip(str(out))}" in err
    assert "not a regular file" in err
    assert "Traceback" not in err
    assert fake.calls["DescribeInstances"] == 0
    assert not out.resolve().is_file()


@pytest.mark.anyio
async def test_failed_jobs_refuses_a_special_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--failed-jobs on a FIFO: exit 2 'not a regular file' (even with --force), and the FIFO stays."""
    pipe = _fifo(tmp_path)
    code, _, err = await anyio.to_thread.run_sync(
        lambda: _report(capsys, str(run_dir), "--failed-jobs", str(pipe), "--force")
    )
    assert code == 2
    assert f"--failed-jobs {clip(str(pipe))}: not a regular file" in err
    assert pipe.is_fifo()


# 2. the API's text is escaped and cut in the table and in Markdown; JSON keeps it exact


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        pytest.param("OK_CODE", 80, "OK_CODE", id="plain"),
        pytest.param("a\x1b[2Jb", 80, "a\\x1b[2Jb", id="escape"),
        pytest.param("bell\x07", 80, "bell\\x07", id="bell"),
        pytest.param("two\nlines\r", 80, "two\\nlines\\r", id="newlines"),
        pytest.param("é\u202eevil", 80, "é\\u202eevil", id="bidi-override-kept-accent"),
        pytest.param("x" * 10_000, 8, "xxxxxxxx…(10000 bytes)", id="long"),
        pytest.param("\x1b" * 10, 8, "\\x1b\\x1b…(10 bytes)", id="long-escaped"),
        pytest.param(7, 80, "7", id="not-a-string"),
    ],
)
def test_cell_escapes_control_characters_and_cuts(value: object, limit: int, expected: str) -> None:
    """A table cell shows control characters escaped and long text cut with its size."""
    assert cell(value, limit) == expected


@pytest.mark.anyio
async def test_hostile_api_text_is_escaped_and_cut_in_table_and_markdown(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Codes and request ids with ESC, BEL, newlines, | and 10 kB reach neither the terminal raw nor a new Markdown
    row; JSON keeps them exact."""
    _append_hostile_failure(run_dir)
    code, table, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir)))
    assert code == 0
    assert CONTROL.search(table) is None
    assert "EVIL\\x1b[2J\\x07|CODE\\n| x | y |" in table
    assert max(len(line) for line in table.splitlines()) < 400
    code, markdown, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "markdown"))
    assert code == 0
    assert CONTROL.search(markdown) is None
    failures = markdown.split("## failures by code\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(failures) == 2 + 2  # header, rule, the hostile code's row and GPU's: no injected row
    for row in failures:
        assert len(re.findall(r"(?<!\\)\|", row)) == 4, row  # three cells, whatever the text held
    assert max(len(line) for line in markdown.splitlines()) < 400
    code, out, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "json"))
    hostile = next(f for f in _strict_json(out)["failures"] if f["code"] == HOSTILE_CODE)
    assert hostile["jobs"][0]["requestId"] == HOSTILE_REQUEST_ID


@pytest.mark.anyio
async def test_inventory_table_escapes_the_apis_groups(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zones and tag values with ESC, BEL and newlines are shown escaped in inventory's table, exact in JSON."""
    zone = "SEL\x1b[2J\x07"
    tag = "web\nteam"
    fake = await make_fake(
        [
            FakeInstance("1", zone_id=zone, tags=[{"key": "team", "value": tag}]),
            FakeInstance("2", zone_id="SEL-A", tags=[{"key": "team", "value": "db"}]),
        ]
    )
    out = tmp_path / "fleet.jsonl"
    for group_by, shown in (("zone", "SEL\\x1b[2J\\x07"), ("tag:team", "web\\nteam")):
        assert await _cli("inventory", "-o", str(out), "--group-by", group_by, "--endpoint", fake.url) == 0
        table = capsys.readouterr().out
        assert CONTROL.search(table) is None
        assert f"  {shown}  " in table
    assert await _cli("inventory", "-o", str(out), "--endpoint", fake.url, "--output", "json") == 0
    assert zone in json.loads(capsys.readouterr().out)["byGroup"]


# 6. a damaged run: non-finite numbers, a missing, empty or garbage journal, damaged records


@pytest.mark.anyio
async def test_non_finite_numbers_in_events_are_skipped_and_counted(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN, Infinity and 1e999 in events.jsonl: strict JSON out, table and Markdown without a traceback, the lines
    counted as damaged in all three."""
    with (run_dir / "events.jsonl").open("a") as handle:
        handle.write('{"event": "api.attempt", "apiSeconds": NaN, "limiterWaitSeconds": -Infinity}\n')
        handle.write('{"event": "job.retry_scheduled", "backoffSeconds": 1e999, "code": "X"}\n')
        handle.write('{"event": "api.attempt", "apiSeconds": Infinity}\n')
    code, out, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "json"))
    assert code == 0
    report = _strict_json(out)
    assert report["events"] == {"damagedLines": 3}
    assert math.isfinite(report["time"]["apiSeconds"]["seconds"])
    assert "X" not in report["retries"]["byCode"]
    for output in ("table", "markdown"):
        code, text, err = await anyio.to_thread.run_sync(lambda o=output: _report(capsys, str(run_dir), "--output", o))
        assert code == 0
        assert "Traceback" not in err
        assert "3 line(s) of events.jsonl skipped" in text
        assert "nan" not in text.lower().replace("nanos", "")


def _no_journal(run: Path) -> None:
    (run / "journal.log").unlink()


def _empty_journal(run: Path) -> None:
    (run / "journal.log").write_bytes(b"")


def _garbage_journal(run: Path) -> None:
    (run / "journal.log").write_bytes(b"\x00\xffnot a journal\nat all\n")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param(_no_journal, "the run directory has no journal.log", id="missing"),
        pytest.param(_empty_journal, "journal.log is empty", id="empty"),
        pytest.param(_garbage_journal, "journal.log holds no readable record (2 damaged)", id="garbage"),
    ],
)
async def test_a_journal_that_says_nothing_is_said_so(
    run_dir: Path, capsys: pytest.CaptureFixture[str], damage: Any, said: str
) -> None:
    """A missing, empty or garbage journal.log: a warning on stderr, the problem in JSON, table and Markdown."""
    damage(run_dir)
    code, out, err = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "json"))
    assert code == 0
    assert f"imagebatch: warning: {said}" in err
    assert said in _strict_json(out)["journal"]["problem"]
    for output in ("table", "markdown"):
        code, text, err = await anyio.to_thread.run_sync(lambda o=output: _report(capsys, str(run_dir), "--output", o))
        assert f"WARNING: {said}" in text
        assert "imagebatch: warning:" in err


@pytest.mark.anyio
async def test_damaged_records_are_shown_in_table_and_markdown(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal record damaged in the middle (not a torn tail) is counted in JSON and shown in table and Markdown."""
    journal = run_dir / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = b"00000000" + lines[1][8:]  # a wrong checksum, good records after it
    journal.write_bytes(b"".join(lines))
    code, out, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "json"))
    assert _strict_json(out)["journal"] == {"tornRecords": 1, "damagedRecords": 1, "problem": None}
    for output in ("table", "markdown"):
        code, text, _ = await anyio.to_thread.run_sync(lambda o=output: _report(capsys, str(run_dir), "--output", o))
        assert code == 0
        assert "1 record(s) failed their checksum and were skipped, of which 1 damaged" in text


@pytest.mark.anyio
async def test_a_good_run_has_no_damage_lines(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run nobody damaged: no warning, no journal or events row, zero counts in JSON."""
    _, out, err = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir), "--output", "json"))
    report = _strict_json(out)
    assert (report["journal"], report["events"]) == (
        {"tornRecords": 0, "damagedRecords": 0, "problem": None},
        {"damagedLines": 0},
    )
    assert "warning" not in err
    _, table, _ = await anyio.to_thread.run_sync(lambda: _report(capsys, str(run_dir)))
    assert "\n  journal" not in table
    assert "\n  events" not in table


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


# 7. README: the listing's call count, and what validate --output json prints on exit 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("running", "stopped", "calls"),
    [
        pytest.param(50, 50, 10, id="even-split-10"),
        pytest.param(49, 51, 11, id="worst-split-11"),
        pytest.param(100, 0, 11, id="one-state-empty-still-one-call"),
        pytest.param(10, 10, 2, id="one-full-page-each"),
    ],
)
async def test_listing_takes_a_call_per_page_of_each_combination_rounded_up(
    make_fake: FakeFactory, running: int, stopped: int, calls: int
) -> None:
    """Calls are ceil(n / page) per state, at least one each: README's "10 or 11" for 10,000 in two states, scaled
    down to pages of 10."""
    fleet = [FakeInstance(f"r{n}", status="RUNNING") for n in range(running)]
    fleet += [FakeInstance(f"s{n}", status="STOPPED") for n in range(stopped)]
    fake = await make_fake(fleet)
    async with ZecClient(fake.url, CREDS) as client:
        listing = await list_instances(client, build_selection(states=[("RUNNING,STOPPED", "--status")]), page_size=10)
    assert listing.calls == fake.calls["DescribeInstances"] == calls
    assert calls == sum(max(1, math.ceil(n / 10)) for n in (running, stopped))
    assert len(listing.instances) == running + stopped


def test_readme_states_the_listing_bound_and_what_json_stdout_holds_on_errors() -> None:
    """README gives the listing's calls as the test above counts them, and says validate prints its document on
    exit 2."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "10,000 instances in two states take 10 calls (5,000 each) or 11 (4,999 and 5,001)" in text
    assert "on an error stdout stays empty" not in text
    assert "`validate` that finds problems (exit 2) prints its document with them" in text


def test_validate_json_prints_the_document_on_exit_2_and_nothing_on_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate --output json: problems (exit 2) give the document with ok false; a missing file gives empty stdout."""
    bad = tmp_path / "jobs.csv"
    bad.write_text("instanceId\n1\n1\n")
    assert main(["validate", str(bad), "--output", "json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["problems"]
    assert main(["validate", str(tmp_path / "missing.csv"), "--output", "json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "missing.csv" in captured.err
