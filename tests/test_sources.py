"""Job lists: every problem is reported with file, line and field; good lists read in all formats."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch import JobListError, UsageError
from batch.sources import JobList

DATE = datetime(2026, 11, 29, tzinfo=UTC)


def problems_of(tmp_path: Path, name: str, content: str | bytes, **kwargs: object) -> list[str]:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return JobList(path, date=DATE, **kwargs).validate().problems  # type: ignore[arg-type]


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    ("content", "where", "needle"),
    [
        pytest.param("instanceId\n\n", "jobs.csv", "no jobs", id="header-only"),
        pytest.param("", "jobs.csv", "empty", id="empty"),
        pytest.param(
            "imageName\nabc\n", "jobs.csv:1: field 'instanceId'", "required column is missing", id="no-id-column"
        ),
        pytest.param("instanceId,imageName\n,abc\n", "jobs.csv:2: field 'instanceId'", "required", id="blank-id"),
        pytest.param(
            "instanceId,imagename\n1,ab\n",
            "jobs.csv:1: field 'imagename'",
            "did you mean 'imageName'",
            id="unknown-col",
        ),
        pytest.param(
            "instanceId,tag\n1,a=b\n", "jobs.csv:1: field 'tag'", "did you mean 'tags'", id="did-you-mean-tags"
        ),
        pytest.param("instanceId,tags\n1,env\n", "jobs.csv:2: field 'tags'", "not key=value", id="tag-syntax"),
        pytest.param("instanceId,tags\n1,a=1;a=2\n", "jobs.csv:2: field 'tags'", "appears twice", id="dup-tag-key"),
        pytest.param("instanceId,tags\n1,=v\n", "jobs.csv:2: field 'tags'", "1-64 characters", id="empty-tag-key"),
        pytest.param("instanceId,imageName\n1,a\n", "jobs.csv:2: field 'imageName'", "2-63", id="name-short"),
        pytest.param(f"instanceId,imageName\n1,{'a' * 64}\n", "jobs.csv:2: field 'imageName'", "2-63", id="name-long"),
        pytest.param(
            "instanceId,imageName\n1,web 01\n", "jobs.csv:2: field 'imageName'", "only letters", id="name-space"
        ),
        pytest.param("instanceId,imageName\n1,web/01\n", "jobs.csv:2: field 'imageName'", "'/'", id="name-slash"),
        pytest.param(
            "instanceId,imageName\n1,-web\n", "jobs.csv:2: field 'imageName'", "start and end", id="name-start"
        ),
        pytest.param("instanceId,imageName\n1,web.\n", "jobs.csv:2: field 'imageName'", "start and end", id="name-end"),
        pytest.param(
            "instanceId,imageName\n1,ab,extra\n", "jobs.csv:2", "3 values but the header has 2", id="extra-value"
        ),
        pytest.param('instanceId\n"1\n', "jobs.csv:", "CSV syntax error", id="open-quote"),
        pytest.param("instanceId\nbad id!\n", "jobs.csv:2: field 'instanceId'", "not an instance id", id="bad-id"),
        pytest.param("instanceId,instanceId\n1,1\n", "jobs.csv:1: field 'instanceId'", "appears twice", id="dup-col"),
    ],
)
def test_csv_problems_name_the_place(tmp_path: Path, content: str, where: str, needle: str) -> None:
    """Each CSV problem is one message naming file, line and field."""
    message = only(problems_of(tmp_path, "jobs.csv", content))
    assert where in message
    assert needle in message


def test_duplicates_name_both_lines(tmp_path: Path) -> None:
    """A repeated instanceId or image name names the repeat and where it first stood."""
    problems = problems_of(tmp_path, "jobs.csv", "instanceId,imageName\n1,a1\n2,b2\n1,c3\n4,b2\n")
    assert f"{tmp_path / 'jobs.csv'}:4: field 'instanceId': duplicate instanceId '1' (first at line 2)" in problems
    assert any(":5: field 'imageName': duplicate image name 'b2' (first at line 3)" in p for p in problems)
    assert len(problems) == 2


def test_all_problems_are_reported_not_just_the_first(tmp_path: Path) -> None:
    """validate keeps going: three bad rows, three problems."""
    problems = problems_of(tmp_path, "jobs.csv", "instanceId,imageName\n,ab\n2,x\n3,ok-name\n4,bad name\n")
    assert [p.split(": field")[0].rsplit(":", 1)[1] for p in problems] == ["2", "3", "5"]


def test_utf8_bom_is_accepted_with_a_warning(tmp_path: Path) -> None:
    """Excel's UTF-8 BOM does not turn into part of the first column name."""
    path = tmp_path / "jobs.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"instanceId\n1\n")
    result = JobList(path, date=DATE).validate()
    assert result.ok
    assert result.jobs == 1
    assert "byte-order mark" in only(result.warnings)


def test_utf16_is_refused(tmp_path: Path) -> None:
    """A UTF-16 file (with its BOM) is named as such."""
    message = only(problems_of(tmp_path, "jobs.csv", "instanceId\n1\n".encode("utf-16")))
    assert ":1:" in message
    assert "UTF-16" in message


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    """Latin-1 bytes: the line and byte are named."""
    message = only(problems_of(tmp_path, "jobs.csv", b"instanceId,imageName\n1,ok-name\n2,caf\xe9\n"))
    assert "jobs.csv:3:" in message
    assert "not valid UTF-8" in message
    assert "0xe9" in message


def test_template_names_are_checked_too(tmp_path: Path) -> None:
    """A --name-template that makes a bad name is reported on the row, saying it came from the template."""
    message = only(problems_of(tmp_path, "jobs.csv", "instanceId\n1\n", name_template="{instanceId}/{date:%Y}"))
    assert "field 'imageName'" in message
    assert "--name-template" in message


def test_bad_template_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown template field is refused up front, listing the known ones."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId\n1\n")
    with pytest.raises(UsageError, match="unknown field 'hostname'"):
        JobList(path, name_template="{hostname}-{date:%Y}")


def test_default_template_and_fields(tmp_path: Path) -> None:
    """The default name is {instanceId}-{date:%Y%m%d}; run_id and columns are usable."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,resourceGroupId\n123,rg1\n")
    assert [j.image_name for j in JobList(path, date=DATE)] == ["123-20261129"]
    jobs = JobList(path, date=DATE, run_id="r7", name_template="{resourceGroupId}-{instanceId}-{run_id}")
    assert [j.image_name for j in jobs] == ["rg1-123-r7"]
    jobs = JobList(path, date=DATE, name_template="{instanceId:.1}x{date:%Y}-{date:%m}")
    assert [j.image_name for j in jobs] == ["1x2026-11"]


def test_json_array_defaults_and_tag_forms(tmp_path: Path) -> None:
    """JSON: defaults apply, tags as an object or the API's list; lines are the objects' lines."""
    path = tmp_path / "jobs.json"
    path.write_text(
        '{\n  "defaults": {"resourceGroupId": "rg-web", "tags": {"env": "prod"}},\n  "jobs": [\n'
        '    {"instanceId": "1"},\n'
        '    {"instanceId": "2", "tags": [{"key": "team", "value": "db"}], "resourceGroupId": "rg-db"}\n  ]\n}\n'
    )
    jobs = list(JobList(path, date=DATE))
    assert [(j.line, j.instance_id, j.resource_group_id, j.tags) for j in jobs] == [
        (4, "1", "rg-web", (("env", "prod"),)),
        (5, "2", "rg-db", (("team", "db"),)),
    ]


@pytest.mark.parametrize(
    ("content", "where", "needle"),
    [
        pytest.param(
            '[\n{"instanceId": "1"},\n{"instanceId": 2}\n]',
            "jobs.json:3: field 'instanceId'",
            "quote long",
            id="number-id",
        ),
        pytest.param('[\n{"instanceId": "1",}\n]', "jobs.json:2", "not valid JSON", id="syntax"),
        pytest.param(
            '[\n{"instanceId": "1", "imageNme": "ab"}\n]',
            "jobs.json:2: field 'imageNme'",
            "did you mean 'imageName'",
            id="typo",
        ),
        pytest.param('[\n"1"\n]', "jobs.json:2", "must be an object", id="not-object"),
        pytest.param('{"jobz": []}', "jobs.json:1", "unknown top-level field 'jobz'", id="top-level"),
        pytest.param(
            '{"defaults": {"colour": "x"}, "jobs": [{"instanceId": "1"}]}',
            "field 'defaults.colour'",
            "unknown",
            id="bad-default",
        ),
        pytest.param(
            '[\n{"instanceId": "1", "tags": {"a": 1}}\n]',
            "jobs.json:2: field 'tags'",
            "must be a string",
            id="tag-value",
        ),
        pytest.param("[]", "jobs.json", "no jobs", id="empty-array"),
        pytest.param('[{"instanceId": "1"}] trailing', "jobs.json:1", "extra text", id="trailing"),
    ],
)
def test_json_problems_name_the_place(tmp_path: Path, content: str, where: str, needle: str) -> None:
    """Each JSON problem names file, line and field."""
    message = only(problems_of(tmp_path, "jobs.json", content))
    assert where in message
    assert needle in message


def test_jsonl_reads_and_reports_lines(tmp_path: Path) -> None:
    """JSON Lines: blank lines skipped; a broken line is named."""
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"instanceId": "1"}\n\n{"instanceId": "2", "tags": {"k": "v"}}\n')
    assert [(j.line, j.instance_id) for j in JobList(path, date=DATE)] == [(1, "1"), (3, "2")]
    message = only(problems_of(tmp_path, "bad.jsonl", '{"instanceId": "1"}\n{"instanceId": \n'))
    assert "bad.jsonl:2:" in message


def test_unknown_suffix_needs_format(tmp_path: Path) -> None:
    """A .txt job list needs --format; with it, it reads."""
    path = tmp_path / "jobs.txt"
    path.write_text("instanceId\n1\n")
    with pytest.raises(UsageError, match="--format"):
        JobList(path)
    assert [j.instance_id for j in JobList(path, fmt="csv")] == ["1"]


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A job list that does not exist is a clear usage error, not a traceback."""
    with pytest.raises(UsageError, match="cannot open"):
        JobList(tmp_path / "nope.csv").validate()


def test_iterating_a_bad_list_raises_job_list_error(tmp_path: Path) -> None:
    """Iteration refuses bad rows too (run validates first, but never trusts)."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,imageName\n1,x\n")
    with pytest.raises(JobListError, match=r"jobs\.csv:2"):
        list(JobList(path))


def test_sample_job_lists_are_valid() -> None:
    """Every sample in jobs/ validates."""
    samples = sorted((Path(__file__).parent.parent / "jobs").glob("*.*[!d]"))
    assert samples
    for path in samples:
        if path.suffix in {".csv", ".json", ".jsonl"}:
            result = JobList(path, date=DATE).validate()
            assert result.ok, (path, result.problems)
