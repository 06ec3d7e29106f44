"""run --keep over HTTP against the fake: seven nights, foreign images, failures, batching, the stopped path."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.client import ZecClient
from batch.clock import Clock
from batch.errors import ApiError, JobListError, RunDirectoryError, ThrottledError, UsageError
from batch.fake import FakeImage, FakeInstance, FakeZenlayer
from batch.fake.images import seed_image
from batch.options import RunOptions
from batch.ownership import CREATED_KEY, INSTANCE_KEY, POLICY_KEY, RUN_KEY, ownership_tags
from batch.policy import Attempts, Call, Failed, Retry, RetryOptions, decide
from batch.run import Run, RunOutcome

from .conftest import CREDS, FakeFactory, instances, write_csv

pytestmark = pytest.mark.anyio

POLICY = "nightly"
NIGHT0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
FAST = {
    "rate": 2000.0,
    "concurrency": 8,
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "seed": 1,
    "lookup_delay": 0.05,
    "poll_interval": 0.05,
}
QUICK = {"image_ready_seconds": 0.05, "transition_seconds": 0.05}


def night(n: int) -> datetime:
    """The moment of night n's run."""
    return NIGHT0 + timedelta(days=n)


def seed_nights(fake: FakeZenlayer, instance: str, nights: range, *, policy: str = POLICY) -> list[FakeImage]:
    """One AVAILABLE image of the policy per night before the test's, tagged as imagebatch tags its images."""
    return [
        seed_image(
            fake.cloud, instance, f"{instance}-old-{n}", tags=ownership_tags(policy, instance, night(n), f"r{n}")
        )
        for n in nights
    ]


async def run_keep(
    tmp_path: Path, fake: FakeZenlayer, ids: list[str], *, when: datetime, out: str = "run", **options: Any
) -> tuple[RunOutcome, dict[str, dict[str, Any]]]:
    """Run a one-column job list with --keep on a wall clock set to ``when``; the outcome and results by instance."""
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    opts = RunOptions(**{**FAST, "policy": POLICY, "keep": 3, **options})
    clock = Clock(monotonic=time.monotonic, wall=lambda: when.timestamp())
    outcome = await Run(job_list, tmp_path / out, opts, credentials=CREDS, endpoint=fake.url, clock=clock).execute()
    results = [json.loads(line) for line in (tmp_path / out / "results.jsonl").read_text().splitlines()]
    by_id = {r["instanceId"]: r for r in results}
    assert len(by_id) == len(results), "a job has more than one result line"
    return outcome, by_id


async def settle(fake: FakeZenlayer) -> dict[str, FakeImage]:
    """Wait until no image is DELETING; the images left."""
    for _ in range(200):
        fake.cloud.advance()
        if not any(i.status == "DELETING" for i in fake.cloud.images.values()):
            break
        await anyio.sleep(0.02)
    return dict(fake.cloud.images)


def summary_of(out: Path) -> dict[str, Any]:
    """summary.json."""
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


async def test_seven_nights_keep_three(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Seven nightly runs with --keep 3: each instance ends with exactly its 3 newest good images; the night
    i-2's image fails deletes nothing of i-2; no image is ever named in two DeleteImages calls."""
    ids = ["i-1", "i-2", "i-3"]
    fake = await make_fake(instances(*ids), cloud_kwargs=QUICK)
    made: dict[str, list[tuple[int, str]]] = {i: [] for i in ids}
    for n in range(1, 8):
        fake.cloud.failed_images = {"i-2"} if n == 5 else set()
        before = {i for i, img in (await settle(fake)).items() if img.instance_id == "i-2"}
        outcome, results = await run_keep(tmp_path, fake, ids, when=night(n), out=f"night-{n}")
        for instance in ids:
            made[instance].append((n, results[instance]["imageId"]))
        if n == 5:
            assert outcome.exit_code == 1
            assert results["i-2"]["status"] == "failed"
            assert results["i-2"]["prunedImageIds"] == []
            assert before <= set(await settle(fake)), "the failed night deleted an image of i-2"
        else:
            assert outcome.exit_code == 0, results
            assert all(r["status"] == "succeeded" for r in results.values())
        await settle(fake)
    left = await settle(fake)
    for instance in ids:
        good = [image_id for n, image_id in made[instance] if not (instance == "i-2" and n == 5)]
        mine = {i for i, img in left.items() if img.instance_id == instance and img.status == "AVAILABLE"}
        assert mine == set(good[-3:]), instance
    assert max(fake.cloud.delete_requests.values()) == 1
    image = left[made["i-1"][-1][1]]
    tags = {t["key"]: t["value"] for t in image.tags}
    assert tags[POLICY_KEY] == POLICY
    assert tags[INSTANCE_KEY] == "i-1"
    assert tags[CREATED_KEY] == night(7).strftime("%Y%m%dT%H%M%SZ")
    assert tags[RUN_KEY].startswith(night(7).strftime("%Y%m%dT%H%M%SZ"))


async def test_foreign_images_survive(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--keep 1 deletes the instance's older images of its policy only: an untagged image, another
    policy's, another instance's, and a manual image named like the template all survive."""
    fake = await make_fake(instances("i-1"), cloud_kwargs=QUICK)
    own = seed_nights(fake, "i-1", range(1, 4))
    foreign = [
        seed_image(fake.cloud, "i-1", "i-1-manual"),
        seed_image(fake.cloud, "i-1", "i-1-weekly", tags=ownership_tags("weekly", "i-1", night(1), "w1")),
        seed_image(fake.cloud, "i-9", "i-9-old", tags=ownership_tags(POLICY, "i-9", night(1), "r1")),
        seed_image(fake.cloud, "i-1", f"i-1-{night(4):%Y%m%d}-x", tags=[("owner", "alice")]),
    ]
    outcome, results = await run_keep(tmp_path, fake, ["i-1"], when=night(5), keep=1)
    assert outcome.exit_code == 0
    assert sorted(results["i-1"]["prunedImageIds"]) == sorted(i.image_id for i in own)
    assert results["i-1"]["keptImageIds"] == [results["i-1"]["imageId"]]
    left = await settle(fake)
    assert {i.image_id for i in foreign} <= set(left)
    assert not {i.image_id for i in own} & set(left)
    assert summary_of(tmp_path / "run")["images"] == {"deleted": 3, "kept": 1, "failedToDelete": 0}


async def test_keep_without_policy_tags_on_old_images_deletes_nothing(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Old images without the ownership tags (made before them, or by hand) are never pruned, whatever their names."""
    fake = await make_fake(instances("i-1", "i-2"), cloud_kwargs=QUICK)
    old = [seed_image(fake.cloud, i, f"{i}-{night(n):%Y%m%d}") for i in ("i-1", "i-2") for n in range(1, 5)]
    outcome, results = await run_keep(tmp_path, fake, ["i-1", "i-2"], when=night(6), keep=1)
    assert outcome.exit_code == 0
    assert all(r["prunedImageIds"] == [] for r in results.values())
    assert {i.image_id for i in old} <= set(await settle(fake))
    assert "DeleteImages" not in fake.calls


async def test_failed_deletions_are_looked_up_retried_then_recorded(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An id DeleteImages keeps listing as failed is looked up before each resend, sent --max-attempts times,
    then recorded in pruneErrors (the job still succeeds, exit 1); a lost answer is looked up, not resent."""
    # seeded images are numbered in order: img-00000001 (i-1's), img-00000002 (i-2's)
    scripts = {"DeleteImages": {"img-00000001": ["fail"] * 10, "img-00000002": ["lost"]}}
    fake = await make_fake(instances("i-1", "i-2"), scripts=scripts, cloud_kwargs=QUICK)
    stuck = seed_nights(fake, "i-1", range(1, 2))[0]
    lost = seed_nights(fake, "i-2", range(1, 2))[0]
    assert (stuck.image_id, lost.image_id) == ("img-00000001", "img-00000002")
    outcome, results = await run_keep(tmp_path, fake, ["i-1", "i-2"], when=night(3), keep=1, max_attempts=3)
    assert outcome.exit_code == 1
    one = results["i-1"]
    assert one["status"] == "succeeded"
    assert one["prunedImageIds"] == []
    assert [e["imageId"] for e in one["pruneErrors"]] == [stuck.image_id]
    assert one["pruneErrors"][0]["code"] == "DELETE_FAILED"
    assert fake.cloud.delete_requests[stuck.image_id] == 3
    assert results["i-2"]["prunedImageIds"] == [lost.image_id]
    assert "pruneErrors" not in results["i-2"]
    assert fake.cloud.delete_requests[lost.image_id] == 1
    assert summary_of(tmp_path / "run")["images"] == {"deleted": 1, "kept": 2, "failedToDelete": 1}


class TagListings(ZecClient):
    """A client that counts the DescribeCustomImages calls filtered by tag (the policy listing)."""

    listings: list[Any] = []

    async def call(self, action: str, params: dict[str, Any], *, request_timeout: float | None = None) -> Any:
        """Count a policy listing's pages, then send."""
        if action == "DescribeCustomImages" and "tags" in params:
            TagListings.listings.append(params)
        return await super().call(action, params, request_timeout=request_timeout)


async def test_deletions_are_batched_across_jobs(tmp_path: Path, make_fake: FakeFactory) -> None:
    """The policy is listed once, 1,000 a page, by its tag; 150 instances' deletions go in DeleteImages calls of at
    most 100 ids, far fewer calls than jobs."""
    ids = [f"i-{n:03d}" for n in range(150)]
    fake = await make_fake(instances(*ids), cloud_kwargs=QUICK)
    for instance in ids:
        seed_nights(fake, instance, range(1, 3))
    TagListings.listings = []
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    opts = RunOptions(**{**FAST, "policy": POLICY, "keep": 1, "concurrency": 32})
    clock = Clock(monotonic=time.monotonic, wall=night(4).timestamp)
    run = Run(job_list, tmp_path / "run", opts, credentials=CREDS, endpoint=fake.url, clock=clock)
    run.client_factory = TagListings
    outcome = await run.execute()
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert outcome.exit_code == 0
    assert TagListings.listings == [{"pageSize": 1000, "tags": [{"key": POLICY_KEY, "value": POLICY}], "pageNum": 1}]
    assert sum(len(r["prunedImageIds"]) for r in results) == 300
    assert fake.cloud.largest_delete_call <= 100
    assert fake.calls["DeleteImages"] <= 15


async def test_stop_running_prunes_after_the_instance_is_running_again(tmp_path: Path, make_fake: FakeFactory) -> None:
    """With --stop-running, a RUNNING instance is stopped, imaged and started again, then its old images pruned."""
    fake = await make_fake([FakeInstance("i-1", status="RUNNING")], cloud_kwargs=QUICK)
    old = seed_nights(fake, "i-1", range(1, 4))
    outcome, results = await run_keep(
        tmp_path, fake, ["i-1"], when=night(5), keep=2, stop_running=True, stop_timeout=5.0, start_timeout=5.0
    )
    assert outcome.exit_code == 0, results
    record = results["i-1"]
    assert record["power"]["finalState"] == "RUNNING"
    assert sorted(record["prunedImageIds"]) == sorted(i.image_id for i in old[:2])
    assert fake.cloud.instances["i-1"].status == "RUNNING"
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    actions = [e["action"] for e in events if e["event"] == "api.attempt"]
    assert actions.index("StartInstances") < actions.index("DeleteImages")  # downtime is not spent deleting


async def test_policy_is_kept_by_a_resume(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--policy is an identity option: a resume with another policy is refused, naming both."""
    fake = await make_fake(instances("i-1"), cloud_kwargs=QUICK)
    await run_keep(tmp_path, fake, ["i-1"], when=night(1), keep=1)
    opts = RunOptions(**{**FAST, "policy": "weekly", "keep": 1, "resume": True})
    run = Run(None, tmp_path / "run", opts, credentials=CREDS, endpoint=fake.url, explicit={"policy", "keep"})
    with pytest.raises(RunDirectoryError, match=r"--policy 'weekly' differs from the run's 'nightly'"):
        await run.execute()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"policy": "no spaces"}, r"--policy 'no spaces' must be 1-64", id="bad-policy"),
        pytest.param({"keep": 0}, r"--keep must be at least 1", id="keep-zero"),
        pytest.param({"max_age_days": 3.0}, r"--max-age and --prune-failed go with --keep", id="max-age-alone"),
        pytest.param({"keep": 2, "max_age_days": -1.0}, r"--max-age must be a positive", id="negative-age"),
    ],
)
def test_retention_flags_are_checked(options: dict[str, Any], message: str) -> None:
    """Retention flags no run can use are usage errors naming the flag."""
    with pytest.raises(UsageError, match=message):
        RunOptions(**options).check()


async def test_an_instance_id_too_long_for_its_tag_is_refused_at_its_line(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """An instance id longer than a tag value may be is a job-list error at its file:line; nothing is sent."""
    fake = await make_fake(instances("i-1"))
    long_id = "i-" + "7" * 70
    where = r"jobs\.csv:3: field 'instanceId': .* the image's imagebatch-instance tag takes 1-64"
    with pytest.raises(JobListError, match=where):
        await run_keep(tmp_path, fake, ["i-1", long_id], when=night(1))
    assert "CreateImage" not in fake.calls


@pytest.mark.parametrize(
    ("err", "attempts", "verdict"),
    [
        pytest.param(ApiError("DELETE_FAILED", "listed"), Attempts(failures=1, jitter=0.5), Retry(0.5), id="first"),
        pytest.param(ApiError("DELETE_FAILED", "listed"), Attempts(failures=3, jitter=0.5), Failed(), id="spent"),
        pytest.param(
            ThrottledError("REQUEST_LIMIT_EXCEEDED", "slow", status=429),
            Attempts(failures=0, server_wait=4.0, jitter=0.5),
            Retry(4.0),
            id="throttled-waits-for-the-server",
        ),
    ],
)
def test_delete_retry_policy(err: ApiError, attempts: Attempts, verdict: object) -> None:
    """DeleteImages of one image: --max-attempts failures then give up; never sooner than Retry-After."""
    options = RetryOptions(max_attempts=3, backoff_base=1.0, backoff_cap=60.0)
    assert decide(err, attempts, options, call=Call.DELETE) == verdict
