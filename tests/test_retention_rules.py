"""Retention rules without HTTP: ownership tags, their stamp, and the plan from a listing and options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from batch.ownership import (
    OWNERSHIP_KEYS,
    format_created,
    ownership_problem,
    ownership_tags,
    parse_created,
    policy_problem,
    reserved_tag_problem,
)
from batch.retention import ImageRecord, RetentionOptions, plan_retention
from batch.sources import JobList

NOW = datetime(2026, 11, 30, 5, 23, 56, tzinfo=UTC)
POLICY = "nightly"


def img(
    image_id: str,
    instance: str | None = "i-1",
    days_ago: float | None = 0,
    status: str = "AVAILABLE",
    *,
    policy: str | None = POLICY,
    stamp: str | None = None,
    name: str | None = None,
) -> ImageRecord:
    """An image record as the listing would give it, tagged like imagebatch tags its images."""
    tags: list[tuple[str, str]] = []
    if policy is not None:
        tags.append(("imagebatch-policy", policy))
    if instance is not None:
        tags.append(("imagebatch-instance", instance))
    if stamp is not None:
        tags.append(("imagebatch-created", stamp))
    elif days_ago is not None:
        tags.append(("imagebatch-created", format_created(NOW - timedelta(days=days_ago))))
    return ImageRecord(image_id, name or f"{instance}-{image_id}", status, tuple(tags))


def five_nights(instance: str = "i-1", prefix: str = "a") -> list[ImageRecord]:
    """Five AVAILABLE images of one instance, one a night: <prefix>0 is the newest."""
    return [img(f"{prefix}{n}", instance, n) for n in range(5)]


def deleted(images: list[ImageRecord], **options: Any) -> set[str]:
    """The ids the plan deletes, for options over the defaults (keep 3, instance i-1 listed)."""
    settings: dict[str, Any] = {"policy": POLICY, "keep": 3, "now": NOW, "instance_ids": frozenset({"i-1"})}
    settings.update(options)
    return {image_id for image_id, _ in plan_retention(images, RetentionOptions(**settings)).deletions()}


@pytest.mark.parametrize(
    ("images", "options", "expected"),
    [
        pytest.param(five_nights(), {}, {"a3", "a4"}, id="keeps-the-newest-3-of-5"),
        pytest.param(five_nights()[:2], {}, set(), id="fewer-than-keep-deletes-nothing"),
        pytest.param(five_nights(), {"keep": 1}, {"a1", "a2", "a3", "a4"}, id="keep-1"),
        pytest.param(
            [*five_nights(), img("x", "i-1", 30, policy=None)], {}, {"a3", "a4"}, id="image-without-tags-survives"
        ),
        pytest.param(
            [*five_nights(), img("w", "i-1", 30, policy="weekly")], {}, {"a3", "a4"}, id="other-policy-survives"
        ),
        pytest.param(
            [*five_nights(), img("m", None, None, policy=None, name="i-1-a4")],
            {},
            {"a3", "a4"},
            id="manual-image-with-a-look-alike-name-survives",
        ),
        pytest.param(
            [*five_nights(), *five_nights("i-2", "b")], {}, {"a3", "a4"}, id="instance-not-in-the-job-list-survives"
        ),
        pytest.param(
            [*five_nights(), *five_nights("i-2", "b")],
            {"orphans": True},
            {"a3", "a4", "b3", "b4"},
            id="orphans-prunes-instances-not-in-the-list",
        ),
        pytest.param(
            five_nights(), {"instance_ids": frozenset(), "orphans": True}, {"a3", "a4"}, id="no-job-list-with-orphans"
        ),
        pytest.param(five_nights(), {"instance_ids": frozenset()}, set(), id="no-job-list-without-orphans"),
        pytest.param(
            [img("c", "i-1", 9, "CREATING"), img("s", "i-1", 8, "SYNCING"), img("p", "i-1", 7, "PROCESSING")],
            {"keep": 1, "prune_failed": True, "max_age": timedelta(days=1)},
            set(),
            id="in-progress-images-never-deleted",
        ),
        pytest.param(
            [img("c", "i-1", -1, "CREATING"), *five_nights()[:3]], {}, set(), id="in-progress-do-not-count-toward-keep"
        ),
        pytest.param(
            [*five_nights()[:3], img("f", "i-1", 5, "FAILED"), img("u", "i-1", 6, "UNAVAILABLE")],
            {},
            set(),
            id="failed-kept-without-prune-failed",
        ),
        pytest.param(
            [*five_nights()[:3], img("f", "i-1", 5, "FAILED"), img("u", "i-1", 6, "UNAVAILABLE")],
            {"prune_failed": True},
            {"f", "u"},
            id="failed-deleted-with-prune-failed",
        ),
        pytest.param(
            [img("f", "i-1", 0, "FAILED"), *[img(f"a{n}", "i-1", n) for n in range(1, 5)]],
            {},
            {"a4"},
            id="a-newer-failed-image-does-not-count-toward-keep",
        ),
        pytest.param(five_nights(), {"max_age": timedelta(days=1.5)}, {"a2", "a3", "a4"}, id="max-age-within-keep"),
        pytest.param(
            [img("old", "i-1", 90), img("older", "i-1", 100)],
            {"max_age": timedelta(days=7)},
            {"older"},
            id="max-age-never-deletes-the-newest-available",
        ),
        pytest.param(
            [img("f", "i-1", 0, "FAILED"), img("old", "i-1", 90)],
            {"keep": 1, "max_age": timedelta(days=1), "prune_failed": True},
            {"f"},
            id="newest-available-kept-even-behind-a-failed-one",
        ),
        pytest.param(five_nights(), {"fresh": frozenset()}, set(), id="run-without-a-new-good-image-deletes-nothing"),
        pytest.param(five_nights(), {"fresh": frozenset({"i-1"})}, {"a3", "a4"}, id="run-with-a-new-good-image"),
        pytest.param(
            [img("d", "i-1", -1, "DELETING"), *five_nights()[:3], img("a3", "i-1", 3)],
            {},
            {"a3"},
            id="deleting-images-count-for-nothing",
        ),
        pytest.param(
            [*five_nights(), img("n", "i-1", None), img("bad", "i-1", stamp="20261399T000000Z")],
            {"keep": 1, "max_age": timedelta(days=1), "prune_failed": True},
            {"a1", "a2", "a3", "a4"},
            id="unstamped-or-bad-stamp-kept",
        ),
        pytest.param([*five_nights(), img("q", "i-1", 50, "QUARANTINED")], {}, {"a3", "a4"}, id="unknown-status-kept"),
        pytest.param([img("z", None, 50), *five_nights()], {"orphans": True}, {"a3", "a4"}, id="no-instance-tag-kept"),
        pytest.param(
            [img("b", "i-1", 1), img("a", "i-1", 1), img("c", "i-1", 1)],
            {"keep": 1},
            {"a", "b"},
            id="equal-stamps-ordered-by-id",
        ),
    ],
)
def test_retention_plan(images: list[ImageRecord], options: dict[str, Any], expected: set[str]) -> None:
    """The plan deletes exactly the images the rules allow, whatever else the listing holds."""
    assert deleted(images, **options) == expected


def test_plan_groups_by_instance_with_reasons() -> None:
    """Each instance's plan lists every image newest first with a reason; foreign images are absent."""
    plan = plan_retention(
        [*five_nights(), img("f", "i-1", 5, "FAILED"), img("x", "i-1", 9, policy="weekly"), img("z", None, 1)],
        RetentionOptions(policy=POLICY, keep=3, now=NOW, instance_ids=frozenset({"i-1"})),
    )
    (only,) = plan.instances
    assert only.instance_id == "i-1"
    assert [d.image.image_id for d in only.decisions] == ["a0", "a1", "a2", "a3", "a4", "f"]
    reasons = {d.image.image_id: d.reason for d in only.decisions}
    assert reasons["a0"] == "newest AVAILABLE: never deleted"
    assert reasons["a2"] == "among the newest 3 AVAILABLE"
    assert reasons["a3"] == "beyond the newest 3 AVAILABLE"
    assert reasons["f"] == "FAILED: kept (--prune-failed deletes it)"
    assert [d.image.image_id for d in plan.unattributed] == ["z"]
    assert plan.deletions() == [("a3", "i-1"), ("a4", "i-1")]


def test_plan_notes_an_instance_left_alone() -> None:
    """An instance outside the job list keeps everything, and its plan says why."""
    plan = plan_retention(five_nights("i-9"), RetentionOptions(policy=POLICY, keep=1, now=NOW))
    (only,) = plan.instances
    assert only.deleted == ()
    assert only.note is not None
    assert "--orphans" in only.note


def test_keep_below_one_is_refused() -> None:
    """keep=0 would let the newest AVAILABLE image go: the options refuse it."""
    with pytest.raises(ValueError, match="keep must be at least 1"):
        RetentionOptions(policy=POLICY, keep=0, now=NOW)


def test_image_record_from_api_reads_the_wrapped_tags() -> None:
    """A listing item's {"tags": {"tags": [...]}} becomes (key, value) pairs; an item without id is skipped."""
    item = {
        "imageId": "img-1",
        "imageName": "n",
        "imageStatus": "AVAILABLE",
        "tags": {"tags": [{"key": "k", "value": "v"}]},
    }
    record = ImageRecord.from_api(item)
    assert record == ImageRecord("img-1", "n", "AVAILABLE", (("k", "v"),))
    assert ImageRecord.from_api({"imageName": "n"}) is None


# ----- ownership tags ---------------------------------------------------------------------------


def test_ownership_tags_in_order_with_a_utc_stamp() -> None:
    """The four keys, with the creation time converted to UTC and stamped to the second."""
    created = datetime(2026, 11, 30, 7, 23, 56, 999, tzinfo=timezone(timedelta(hours=2)))
    assert ownership_tags("nightly", "i-1", created, "20261130T052356Z-1a2b3c4d") == [
        ("imagebatch-policy", "nightly"),
        ("imagebatch-instance", "i-1"),
        ("imagebatch-created", "20261130T052356Z"),
        ("imagebatch-run", "20261130T052356Z-1a2b3c4d"),
    ]
    assert [k for k, _ in ownership_tags("p", "i", NOW, "r")] == list(OWNERSHIP_KEYS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("20261130T052356Z", datetime(2026, 11, 30, 5, 23, 56, tzinfo=UTC), id="stamp"),
        pytest.param("20261399T052356Z", None, id="month-13"),
        pytest.param("2026-11-30T05:23:56Z", None, id="iso-is-not-the-stamp"),
        pytest.param("20261130T052356", None, id="no-zone"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_created(text: str, expected: datetime | None) -> None:
    """Only the exact stamp shape of a real date parses; anything else is None (the image is kept)."""
    assert parse_created(text) == expected


def test_stamp_round_trips_and_sorts_as_text() -> None:
    """format then parse gives the second back, and text order is time order."""
    stamps = [format_created(NOW + timedelta(hours=h)) for h in (-30, -1, 0, 25)]
    assert [parse_created(s) for s in stamps] == [NOW + timedelta(hours=h) for h in (-30, -1, 0, 25)]
    assert sorted(stamps) == stamps


def test_naive_creation_time_is_refused() -> None:
    """A naive datetime's zone would be a guess: refused with a message saying so."""
    with pytest.raises(ValueError, match="no time zone"):
        format_created(datetime(2026, 11, 30))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("nightly", True, id="word"),
        pytest.param("db_main-7", True, id="digits-dash-underscore"),
        pytest.param("x" * 64, True, id="64-chars"),
        pytest.param("x" * 65, False, id="65-chars"),
        pytest.param("", False, id="empty"),
        pytest.param("night ly", False, id="space"),
        pytest.param("nightly.v2", False, id="dot"),
        pytest.param("nächtlich", False, id="non-ascii"),
    ],
)
def test_policy_names(name: str, ok: bool) -> None:
    """Policy names are 1-64 letters, digits, '-' or '_'; the problem names the flag."""
    problem = policy_problem(name)
    assert (problem is None) == ok
    if problem is not None:
        assert "--policy" in problem


def test_values_longer_than_a_tag_value_are_a_problem() -> None:
    """An instance id over 64 characters cannot be a tag value: said before any call."""
    assert ownership_problem("p", "i" * 64, "r") is None
    problem = ownership_problem("p", "i" * 65, "r")
    assert problem is not None
    assert "imagebatch-instance" in problem
    assert "1-64" in problem
    with pytest.raises(ValueError, match="imagebatch-instance"):
        ownership_tags("p", "i" * 65, NOW, "r")


def test_reserved_tag_problem_names_the_key() -> None:
    """A job's own tag with one of imagebatch's keys is a problem naming it; other keys are fine."""
    assert reserved_tag_problem([("env", "prod")]) is None
    problem = reserved_tag_problem([("env", "prod"), ("imagebatch-policy", "x")])
    assert problem is not None
    assert "imagebatch-policy is reserved" in problem


def test_job_list_setting_a_reserved_key_is_refused_at_its_line(tmp_path: Path) -> None:
    """Validation reports file:line and the tags field for a row that sets imagebatch-created."""
    path = tmp_path / "jobs.csv"
    path.write_text("instanceId,tags\ni-1,env=prod\ni-2,env=prod;imagebatch-created=20200101T000000Z\n", "utf-8")
    result = JobList(path).validate()
    assert not result.ok
    (problem,) = result.problems
    assert problem.startswith(f"{path}:3: field 'tags': tag key imagebatch-created is reserved")
