"""--name-template reaches only its documented fields: no attribute, index or nested access."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch import UsageError
from batch.cli import main
from batch.naming import NameTemplate
from batch.sources import JobList

DATE = datetime(2026, 11, 29, 7, 5, tzinfo=UTC)
SECRET = "s3cr3t-Value-42"  # a valid image name, so only the template check can stop it
ENV_ROUTE = "{date.__class__.__init__.__globals__[re].enum.sys.modules[os].environ[ZENLAYER_ACCESS_KEY_SECRET]}"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        pytest.param(ENV_ROUTE, "attribute and index access is not allowed", id="env-route"),
        pytest.param("{date.__class__}", "attribute and index access", id="attribute"),
        pytest.param("{date.year}", "attribute and index access", id="date-attribute"),
        pytest.param("{instanceId[0]}", "attribute and index access", id="index"),
        pytest.param("{instanceId.__len__}", "attribute and index access", id="column-attribute"),
        pytest.param("{date:{instanceId.__class__}}", "nests a field inside the spec of {date}", id="nested-spec"),
        pytest.param("{instanceId:{run_id}}", "nests a field", id="nested-spec-plain"),
        pytest.param("{instanceId!r}", "conversion !r", id="conversion-r"),
        pytest.param("{instanceId!s}", "conversion !s", id="conversion-s"),
        pytest.param("{instanceId!a}", "conversion !a", id="conversion-a"),
        pytest.param("{0}", "positional field", id="index-zero"),
        pytest.param("{}", "positional field", id="empty-field"),
        pytest.param("{instanceId:>999999999999}", "at most 63", id="huge-width"),
        pytest.param("{instanceId:.99999999999999999999}", "at most 63", id="huge-precision"),
        pytest.param("{instanceId:d}", "a text field takes", id="number-spec"),
        pytest.param("{instanceId:=5}", "a text field takes", id="number-align"),
        pytest.param("{date}", "date spec ''", id="date-without-spec"),
        pytest.param("{date:%10000000Y}", "strftime directives", id="date-width"),
        pytest.param("{date:%-d}", "strftime directives", id="date-glibc-flag"),
        pytest.param("{date:%c}", "strftime directives", id="date-locale-text"),
        pytest.param("{tags}", "unknown field 'tags'", id="column-not-a-name"),
        pytest.param("{hostname}", "known: date, instanceId, resourceGroupId, run_id", id="unknown"),
        pytest.param("{instanceId", "is malformed", id="unclosed"),
    ],
)
def test_unsafe_or_unknown_templates_are_refused(template: str, needle: str) -> None:
    """Each escape route and each unsupported form is refused up front, saying what to use."""
    with pytest.raises(ValueError, match="--name-template") as info:
        NameTemplate(template)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("template", "row", "name"),
    [
        pytest.param("{instanceId}-{date:%Y%m%d}", {"instanceId": "i1"}, "i1-20261129", id="default"),
        pytest.param("{date:%Y%m%dT%H%M}", {}, "20261129T0705", id="date-spec"),
        pytest.param("{date:%b%d}-{date:%j}", {}, "Nov29-333", id="date-names-and-two-specs"),
        pytest.param("{instanceId:>5}", {"instanceId": "1"}, "    1", id="column-align"),
        pytest.param("{instanceId:0>5}", {"instanceId": "1"}, "00001", id="column-fill"),
        pytest.param("{instanceId:-^5}", {"instanceId": "1"}, "--1--", id="column-centre"),
        pytest.param("{instanceId:.4}", {"instanceId": "123456"}, "1234", id="column-precision"),
        pytest.param("{instanceId:x<6.2s}", {"instanceId": "abc"}, "abxxxx", id="column-full-spec"),
        pytest.param("{resourceGroupId}-{run_id}", {"resourceGroupId": "rg"}, "rg-r7", id="group-and-run"),
        pytest.param("{resourceGroupId}x", {}, "x", id="missing-column-is-empty"),
        pytest.param("a{{b}}", {}, "a{b}", id="escaped-braces"),
    ],
)
def test_allowed_templates_render_like_str_format(template: str, row: dict[str, str], name: str) -> None:
    """The allowed forms render as str.format would, through our own loop."""
    assert NameTemplate(template).render(row, date=DATE, run_id="r7") == name


def test_template_error_never_prints_an_environment_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The secret-reading template is a usage error (exit 2) whose message holds no secret."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", SECRET)
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId\n1\n")
    with pytest.raises(UsageError) as info:
        JobList(path, name_template=ENV_ROUTE)
    assert SECRET not in str(info.value)
    assert main(["validate", str(path), "--name-template", ENV_ROUTE]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert "attribute and index access" in captured.err


def test_template_error_clips_a_huge_template() -> None:
    """A 1 MB template is quoted cut short in its error."""
    with pytest.raises(ValueError, match="--name-template") as info:
        NameTemplate("{hostname}" + "x" * 1_000_000)
    assert len(str(info.value)) < 500
