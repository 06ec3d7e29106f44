"""--wait: jobs end when their images do, with batched polls; failed, vanished and slow images fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.fake import FakeInstance

from .conftest import FakeFactory, instances
from .test_runner import run_jobs

pytestmark = pytest.mark.anyio

WAIT = {"wait": True, "poll_interval": 0.05, "wait_timeout": 30.0}


async def test_wait_ends_jobs_when_images_are_available(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Every job ends succeeded with imageStatus AVAILABLE; polls are batched, not one per job per interval."""
    ids = [f"i-{n}" for n in range(30)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0.3})
    outcome, results = await run_jobs(tmp_path, fake, ids, **{**WAIT, "poll_interval": 0.2})
    assert outcome.exit_code == 0
    assert {r["imageStatus"] for r in results.values()} == {"AVAILABLE"}
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert all(r["durationSeconds"] >= 0.25 for r in results.values())
    polls = fake.calls["DescribeCustomImages"] - 1  # minus the starting listing
    assert 0 < polls < 30, "polls must cover many images each"


async def test_without_wait_jobs_end_at_creating(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Without --wait, a job ends when CreateImage is accepted: imageStatus CREATING."""
    fake = await make_fake(instances("i-0"), cloud_kwargs={"image_ready_seconds": 60})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"])
    assert outcome.exit_code == 0
    assert results["i-0"]["imageStatus"] == "CREATING"


async def test_failed_image_fails_the_job(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An image that ends FAILED fails its job with IMAGE_FAILED; exit 1."""
    fleet = [FakeInstance("i-bad"), FakeInstance("i-ok")]
    fake = await make_fake(fleet, cloud_kwargs={"image_ready_seconds": 0.1, "failed_images": {"i-bad"}})
    outcome, results = await run_jobs(tmp_path, fake, ["i-bad", "i-ok"], **WAIT)
    assert outcome.exit_code == 1
    assert results["i-bad"]["status"] == "failed"
    assert results["i-bad"]["error"]["code"] == "IMAGE_FAILED"
    assert results["i-bad"]["imageStatus"] == "FAILED"
    assert results["i-ok"]["imageStatus"] == "AVAILABLE"


async def test_slow_image_times_out(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An image still CREATING after --wait-timeout fails with WAIT_TIMEOUT."""
    fake = await make_fake(instances("i-0"), cloud_kwargs={"image_ready_seconds": 60})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], **{**WAIT, "wait_timeout": 0.2})
    assert outcome.exit_code == 1
    assert results["i-0"]["error"]["code"] == "WAIT_TIMEOUT"
    assert results["i-0"]["imageStatus"] == "CREATING"


async def test_vanished_image_fails(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An image deleted while CREATING (gone from the listing) fails with IMAGE_NOT_FOUND."""
    fake = await make_fake(instances("i-0"), cloud_kwargs={"image_ready_seconds": 60})
    original = fake.cloud.create_image

    def create_then_vanish(*args, **kwargs):  # type: ignore[no-untyped-def]
        image = original(*args, **kwargs)
        fake.cloud.images.pop(image.image_id)
        return image

    fake.cloud.create_image = create_then_vanish  # type: ignore[method-assign]
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], **WAIT)
    assert outcome.exit_code == 1
    assert results["i-0"]["error"]["code"] == "IMAGE_NOT_FOUND"


async def test_lost_answer_with_wait_adopts_and_waits(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A lost CreateImage answer: the image is adopted by name, then awaited like any other."""
    fake = await make_fake(
        instances("i-0", "i-1"), cloud_kwargs={"image_ready_seconds": 0.2}, scripts={"i-0": ["lost"]}
    )
    outcome, results = await run_jobs(tmp_path, fake, ["i-0", "i-1"], **WAIT)
    assert outcome.exit_code == 0
    assert "adopted" in results["i-0"]["reason"]
    assert results["i-0"]["imageStatus"] == "AVAILABLE"
    assert fake.inspect()["duplicateInstances"] == []
