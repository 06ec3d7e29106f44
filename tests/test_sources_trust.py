"""Job lists under hostile input: no row vanishes, no value floods a message, no input crashes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch import JobListError, UsageError
from batch.cli import main
from batch.sources import JobList

DATE = datetime(2026, 11, 29, tzinfo=UTC)


def validate(path: Path, **kwargs: object) -> tuple[int, list[str]]:
    result = JobList(path, date=DATE, **kwargs).validate()  # type: ignore[arg-type]
    return result.jobs, result.problems


# ----- rows whose template name is empty ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "lines"),
    [
        pytest.param("jobs.csv", "instanceId,resourceGroupId\n1,rg1\n2,\n3,rg3\n4,\n", [3, 5], id="csv"),
        pytest.param(
            "jobs.jsonl",
            '{"instanceId": "1", "resourceGroupId": "rg1"}\n{"instanceId": "2"}\n'
            '{"instanceId": "3", "resourceGroupId": "rg3"}\n{"instanceId": "4", "resourceGroupId": ""}\n',
            [2, 4],
            id="jsonl",
        ),
        pytest.param(
            "jobs.json",
            '[{"instanceId": "0"},\n{"instanceId": "1", "resourceGroupId": "rg1"},\n{"instanceId": "2"},\n'
            '{"instanceId": "3", "resourceGroupId": "rg3"},\n{"instanceId": "4", "resourceGroupId": " "}]\n',
            [1, 3, 5],
            id="json",
        ),
    ],
)
def test_rows_with_an_empty_template_name_are_problems(
    tmp_path: Path, name: str, content: str, lines: list[int]
) -> None:
    """Rows whose name renders empty are problems at their line naming the template and field."""
    path = tmp_path / name
    path.write_text(content)
    jobs, problems = validate(path, name_template="{resourceGroupId}")
    assert jobs == 2
    assert [p.split(": field")[0] for p in problems] == [f"{path}:{n}" for n in lines]
    for problem in problems:
        assert "field 'imageName': the name made by --name-template '{resourceGroupId}'" in problem
        assert "from resourceGroupId '' is empty" in problem


def test_a_list_whose_names_all_render_empty_is_not_an_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every row rendering empty gives one problem a row and exit 2, not 'no jobs' or success."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,resourceGroupId\n1,\n2,\n")
    assert main(["validate", str(path), "--name-template", "{resourceGroupId}"]) == 2
    err = capsys.readouterr().err
    assert "no jobs" not in err
    assert "jobs.csv:2: field 'imageName'" in err
    assert "jobs.csv:3: field 'imageName'" in err


def test_a_bad_template_name_names_the_template_and_its_fields(tmp_path: Path) -> None:
    """An invalid name made by the template says which template and which values made it."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,resourceGroupId\n1,r g\n")
    _, problems = validate(path, name_template="{resourceGroupId}-{date:%Y}")
    assert len(problems) == 1
    assert "(made by --name-template '{resourceGroupId}-{date:%Y}' from resourceGroupId 'r g', date)" in problems[0]


@pytest.mark.parametrize(
    "row",
    [
        pytest.param("1,rg1", id="good"),
        pytest.param("1,", id="empty-name"),
        pytest.param("1, ", id="blank-name"),
        pytest.param(",rg1", id="no-id"),
        pytest.param(" ,rg1", id="blank-id"),
        pytest.param("bad id!,rg1", id="bad-id"),
        pytest.param("1,-", id="bad-name"),
    ],
)
def test_every_data_row_is_a_job_or_a_problem(tmp_path: Path, row: str) -> None:
    """Whatever a non-blank row holds, it is counted as a job or reported, never dropped."""
    path = tmp_path / "jobs.csv"
    path.write_text(f"instanceId,resourceGroupId\n{row}\n2,rg2\n")
    jobs, problems = validate(path, name_template="{resourceGroupId}")
    lines_with_problems = {p.removeprefix(f"{path}:").split(":")[0] for p in problems}
    assert jobs + len(lines_with_problems) == 2


# ----- long values in messages --------------------------------------------------------------

BIG = "x" * 100_000  # under the csv module's 128 KiB field limit


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("jobs.csv", f"instanceId,imageName\n1,{BIG}\n", id="csv-image-name"),
        pytest.param("jobs.csv", f"instanceId,imageName\n1,{BIG}!\n", id="csv-image-name-bad-chars"),
        pytest.param("jobs.csv", f"instanceId,imageName\n1,{BIG}\n2,{BIG}\n", id="csv-duplicate-name"),
        pytest.param("jobs.csv", f"instanceId\n{BIG}!\n", id="csv-instance-id"),
        pytest.param("jobs.csv", f"instanceId,tags\n1,{BIG}\n", id="csv-tag-not-pair"),
        pytest.param("jobs.csv", f"instanceId,tags\n1,{BIG[:500]}=v;{BIG[:500]}=w\n", id="csv-tag-key"),
        pytest.param("jobs.csv", f"instanceId,{BIG}\n1,a\n", id="csv-unknown-column"),
        pytest.param("jobs.jsonl", f'{{"instanceId": "1", "imageName": "{BIG * 100}"}}\n', id="jsonl-10mb-name"),
        pytest.param("jobs.jsonl", f'{{"instanceId": "1", "{BIG}": "a"}}\n', id="jsonl-unknown-field"),
        pytest.param("jobs.jsonl", f'{{"instanceId": "1", "tags": {{"{BIG}": 1}}}}\n', id="jsonl-tag-value"),
        pytest.param(
            "jobs.json", f'{{"defaults": {{"{BIG}": 1}}, "jobs": [{{"instanceId": "1"}}]}}', id="json-default"
        ),
        pytest.param("jobs.json", f'{{"{BIG}": []}}', id="json-top-level"),
    ],
)
def test_messages_quote_long_values_cut_short(tmp_path: Path, name: str, content: str) -> None:
    """A huge value is quoted as 80 characters and its size, whatever the message."""
    path = tmp_path / name
    path.write_text(content)
    _, problems = validate(path)
    assert problems
    for problem in problems:
        assert len(problem) < 400 + len(str(path)), problem[:500]
        assert "bytes)" in problem, problem[:500]


# ----- the name shown for the file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("display", "fmt", "content", "expected"),
    [
        pytest.param(
            "fleet.csv",
            None,
            "instanceId\n" + "".join(f"{n}\n" for n in range(1, 11)) + "bad id\n",
            "fleet.csv:12: field 'instanceId': 'bad id' is not an instance id",
            id="snapshot",
        ),
        pytest.param(
            "<stdin>",
            "jsonl",
            '{"instanceId": "1"}\n\n{"instanceId": 2}\n',
            "<stdin>:3: field 'instanceId': must be a string",
            id="stdin",
        ),
        pytest.param("<stdin>", "json", "[\n{]", "<stdin>:2: not valid JSON", id="stdin-syntax"),
        pytest.param("<stdin>", "jsonl", "", "<stdin>: the file is empty", id="stdin-empty"),
    ],
)
def test_display_names_the_original_in_every_message(
    tmp_path: Path, display: str, fmt: str | None, content: str, expected: str
) -> None:
    """With display=, problems name the original file, never the copy actually read."""
    copy = tmp_path / "run" / "joblist.csv"
    copy.parent.mkdir()
    copy.write_text(content)
    result = JobList(copy, fmt=fmt, date=DATE, display=display).validate()
    assert len(result.problems) == 1
    assert result.problems[0].startswith(expected)
    assert str(copy) not in result.problems[0]


def test_display_is_used_for_warnings_iteration_and_format(tmp_path: Path) -> None:
    """The BOM warning, the error of iteration and the format error use the display name too."""
    copy = tmp_path / "spooled"
    copy.write_bytes(b"\xef\xbb\xbfinstanceId\n1\nbad id\n")
    jobs = JobList(copy, fmt="csv", date=DATE, display="<stdin>")
    result = jobs.validate()
    assert result.warnings == ["<stdin>:1: starts with a UTF-8 byte-order mark (ignored)"]
    with pytest.raises(JobListError, match="\n<stdin>:3: field 'instanceId'"):
        list(jobs)
    with pytest.raises(UsageError, match=r"^<stdin>: cannot tell the format"):
        JobList(copy, display="<stdin>")
    with pytest.raises(UsageError, match=r"^fleet\.csv: cannot open"):
        JobList(tmp_path / "gone.csv", display="fleet.csv").validate()


# ----- JSON nesting and the streaming scanner -------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        pytest.param("jobs.json", DEEP, "jobs.json:1", id="json-array"),
        pytest.param("jobs.jsonl", f'{{"instanceId": "1"}}\n{DEEP}\n', "jobs.jsonl:2", id="jsonl-line"),
        pytest.param("jobs.json", f'{{"jobs": [\n{{"instanceId": "1"}},\n{DEEP}]}}', "jobs.json:3", id="jobs-array"),
        pytest.param("jobs.json", f'{{"defaults":\n{DEEP}, "jobs": []}}', "jobs.json:2", id="defaults"),
        pytest.param("jobs.json", f"{{\n{DEEP}: []}}", "jobs.json:2", id="in-place-of-a-key"),
        pytest.param(
            "jobs.json", f'[{{"instanceId": "1",\n"tags": {nested(32)}}}]', "jobs.json:1", id="json-one-too-deep"
        ),
        pytest.param("jobs.jsonl", f'{{"instanceId": "1", "tags": {nested(32)}}}\n', "jobs.jsonl:1", id="jsonl-33"),
    ],
)
def test_deep_nesting_is_a_problem_at_its_line(tmp_path: Path, name: str, content: str, where: str) -> None:
    """JSON nested past the limit is one problem naming the place, not a RecursionError."""
    path = tmp_path / name
    path.write_text(content)
    _, problems = validate(path)
    assert problems == [f"{tmp_path}/{where}: nested deeper than 32 levels; a job is an object of strings and tags"]


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    """A job 32 levels deep is read and judged on its fields (tags of the wrong shape)."""
    path = tmp_path / "jobs.json"
    path.write_text(f'[{{"instanceId": "1", "tags": {nested(31)}}}]')
    _, problems = validate(path)
    assert len(problems) == 1
    assert "field 'tags': each list item must be" in problems[0]


def test_deep_json_exits_2_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate on the hostile document exits 2 with the message."""
    path = tmp_path / "jobs.json"
    path.write_text(DEEP)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "jobs.json:1: nested deeper than 32 levels" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        pytest.param("jobs.json", '[{"instanceId": ' + "1" * 5000 + "}]", "jobs.json:1: not readable", id="json"),
        pytest.param("jobs.jsonl", '{"instanceId": ' + "1" * 5000 + "}\n", "jobs.jsonl:1: not readable", id="jsonl"),
        pytest.param(
            "jobs.json",
            '{"jobs": [{"instanceId": "1"}],\n"defaults": {}}',
            "jobs.json:2: field 'defaults' must come before 'jobs'",
            id="defaults-after-jobs",
        ),
        pytest.param(
            "jobs.json", '{"jobs": [],\n"jobs": []}', "jobs.json:2: top-level field 'jobs' appears", id="twice"
        ),
        pytest.param("jobs.json", '{"jobs": [],}', "jobs.json:1: not valid JSON", id="trailing-comma"),
        pytest.param("jobs.json", "\n\n  \n", "jobs.json: the file is empty", id="blank"),
        pytest.param("jobs.json", '[{"instanceId": "1"}\n', "jobs.json:2: not valid JSON: expected", id="unclosed"),
    ],
)
def test_json_structure_problems(tmp_path: Path, name: str, content: str, needle: str) -> None:
    """Over-long numbers, late defaults, repeated keys and broken structure are one clear problem."""
    path = tmp_path / name
    path.write_text(content)
    _, problems = validate(path)
    assert len(problems) == 1
    assert needle in problems[0]


def write_pretty_json(path: Path, count: int) -> list[tuple[int, str]]:
    """A JSON list with defaults and jobs of 1 to 4 lines each; returns (line, instanceId) per job."""
    lines = ["{", '  "defaults": {', '    "resourceGroupId": "rg"', "  },", '  "jobs": [']
    expected = []
    for n in range(count):
        expected.append((len(lines) + 1, f"i{n}"))
        sep = "," if n else " "
        if n % 3 == 0:
            lines.append(f'  {sep}{{"instanceId": "i{n}", "tags": {{"k": "v"}}}}')
        elif n % 3 == 1:
            lines += [f"  {sep}{{", f'    "instanceId": "i{n}",', '    "tags": [{"key": "k", "value": "v"}]', "  }"]
        else:
            lines += [f'  {sep}{{"instanceId":', f'     "i{n}"}}', ""]
    lines += ["  ]", "}", ""]
    path.write_text("\n".join(lines))
    return expected


@pytest.mark.parametrize("window", [1, 7, 100, None])
def test_json_job_lines_are_right_across_the_reading_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """Every job of a 3,000-job list keeps its line, whatever the size of the window read at a time."""
    if window is not None:
        monkeypatch.setattr("batch.jsonscan._AHEAD", window)
        monkeypatch.setattr("batch.jsonscan._CHUNK", window)
    path = tmp_path / "jobs.json"
    expected = write_pretty_json(path, 3000)
    jobs = JobList(path, date=DATE)
    assert jobs.validate().jobs == 3000
    assert [(j.line, j.instance_id, j.resource_group_id) for j in jobs] == [(n, i, "rg") for n, i in expected]


@pytest.mark.parametrize("window", [1, 7, None])
def test_a_syntax_error_deep_in_the_file_names_its_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """A broken job after thousands of good ones is named at the line and column json itself gives."""
    if window is not None:
        monkeypatch.setattr("batch.jsonscan._AHEAD", window)
        monkeypatch.setattr("batch.jsonscan._CHUNK", window)
    path = tmp_path / "jobs.json"
    write_pretty_json(path, 2000)
    text = path.read_text().replace('"instanceId": "i1999"', '"instanceId" "i1999"')
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(text)
    _, problems = validate(path)
    assert problems == [f"{path}:{info.value.lineno}: not valid JSON: {info.value.msg} (column {info.value.colno})"]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        pytest.param(
            "a.json", '[\n{"instanceId": "i-1"},\n{"instanceId": "A", "instanceId": "B"}\n]', 3, id="json-field"
        ),
        pytest.param("b.jsonl", '{"instanceId": "i-1"}\n{"instanceId": "i-2", "tags": {"k": "v", "k": "w"}}\n', 2,
                     id="jsonl-tag"),
    ],
)
def test_a_key_twice_in_one_json_job_is_a_problem(tmp_path: Path, name: str, text: str, line: int) -> None:
    """JSON would keep the last of two equal keys silently; the job list says which key, where."""
    path = tmp_path / name
    path.write_text(text)
    result = JobList(path).validate()
    assert not result.ok
    assert any(f"{name}:{line}:" in p and "appears twice in one object" in p for p in result.problems), result.problems


def test_every_bad_json_lines_line_is_reported(tmp_path: Path) -> None:
    """JSON Lines lines are independent: each unreadable line is its own problem, and later lines are checked."""
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"instanceId":"A","instanceId":"B"}\n{"instanceId": \n{"imageName":"x"}\n{"instanceId":"i-4"}\n')
    result = JobList(path).validate()
    places = sorted({p.split(":")[1] for p in result.problems})
    assert places == ["1", "2", "3"], result.problems


def test_inventory_columns_are_accepted_and_not_read(tmp_path: Path) -> None:
    """instanceName and zoneId (written by inventory) validate and change nothing in the jobs."""
    from batch.sources import JobList

    path = tmp_path / "fleet.csv"
    path.write_text("instanceId,instanceName,zoneId,group\ni-1,web 1,SEL-A,SEL-A\n", encoding="utf-8")
    jobs = JobList(path, fmt="csv", name_template="{instanceId}-x")
    assert jobs.validate().ok
    (job,) = list(jobs)
    assert job.instance_id == "i-1"
    assert job.group == "SEL-A"
