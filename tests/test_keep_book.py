"""run --keep's per-instance choice (KeepBook): the retention rules applied to one instance's listed
images plus its new one, each image handed out once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batch.keep import KeepBook, KeepRule, new_image_record
from batch.ownership import ownership_tags
from batch.retention import ImageRecord

NOW = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)


def image(
    image_id: str, days_ago: float, status: str = "AVAILABLE", *, instance: str = "i-1", policy: str = "default"
) -> ImageRecord:
    tags = ownership_tags(policy, instance, NOW - timedelta(days=days_ago), "run-x")
    return ImageRecord(image_id, f"{instance}-{image_id}", status, tuple(tags))


NEW = new_image_record("img-new", "i-1-new", ownership_tags("default", "i-1", NOW, "run-now"))


@pytest.mark.parametrize(
    ("rule", "listed", "expected"),
    [
        pytest.param(KeepRule("default", 3), [], [], id="first-night-nothing"),
        pytest.param(KeepRule("default", 3), [image("a", 1), image("b", 2)], [], id="fewer-than-keep"),
        pytest.param(
            KeepRule("default", 3), [image("a", 1), image("b", 2), image("c", 3)], ["c"], id="oldest-beyond-3"
        ),
        pytest.param(KeepRule("default", 1), [image("a", 1), image("b", 2)], ["a", "b"], id="keep-1-only-new"),
        pytest.param(KeepRule("default", 1), [image("a", 1, instance="i-2")], [], id="other-instance-untouched"),
        pytest.param(KeepRule("default", 1), [image("a", 1, policy="weekly")], [], id="other-policy-untouched"),
        pytest.param(KeepRule("default", 1), [image("a", 1, "CREATING")], [], id="creating-never"),
        pytest.param(KeepRule("default", 1), [image("a", 1, "FAILED")], [], id="failed-kept-by-default"),
        pytest.param(KeepRule("default", 1, prune_failed=True), [image("a", 1, "FAILED")], ["a"], id="prune-failed"),
        pytest.param(KeepRule("default", 5, max_age_days=2.5), [image("a", 1), image("b", 3)], ["b"], id="max-age"),
    ],
)
def test_deletions(rule: KeepRule, listed: list[ImageRecord], expected: list[str]) -> None:
    """Each case deletes exactly the images the retention rules choose for this instance."""
    book = KeepBook(rule, listed)
    assert sorted(book.deletions("i-1", NEW, NOW)) == expected


def test_an_image_is_handed_out_once() -> None:
    """A second ask (a job retried in the same process) hands out nothing twice."""
    book = KeepBook(KeepRule("default", 1), [image("a", 1)])
    assert book.deletions("i-1", NEW, NOW) == ["a"]
    assert book.deletions("i-1", NEW, NOW) == []


def test_an_unlabelled_or_manual_image_survives() -> None:
    """A manual image with the template's name but no ownership tags is never chosen."""
    manual = ImageRecord("m", "i-1-20261129", "AVAILABLE", ())
    book = KeepBook(KeepRule("default", 1), [manual])
    assert book.deletions("i-1", NEW, NOW) == []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        pytest.param(KeepRule("default", 0), "--keep", id="keep-0"),
        pytest.param(KeepRule("bad policy!", 1), "policy", id="bad-policy"),
        pytest.param(KeepRule("default", 1, max_age_days=0), "--max-age", id="max-age-0"),
        pytest.param(KeepRule("default", 2), None, id="fine"),
    ],
)
def test_rule_problems(rule: KeepRule, problem: str | None) -> None:
    """Bad flags name themselves."""
    found = rule.problem()
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
