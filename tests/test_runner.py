"""Whole runs against the fake server over loopback: every retry path, every stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch import Credentials
from batch.fake import FakeInstance, FakeZenlayer
from batch.options import RunOptions
from batch.run import Run, RunOutcome

from .conftest import CREDS, FakeFactory, instances, write_csv

pytestmark = pytest.mark.anyio

FAST = {"rate": 2000.0, "concurrency": 8, "backoff_base": 0.01, "backoff_cap": 0.05, "seed": 1, "lookup_delay": 0.05}


async def run_jobs(
    tmp_path: Path, fake: FakeZenlayer, ids: list[str], *, creds: Credentials = CREDS, out: str = "run", **options: Any
) -> tuple[RunOutcome, dict[str, dict[str, Any]]]:
    """Run a one-column job list of ``ids`` and return the outcome and results by instance."""
    job_list = tmp_path / "jobs.csv"
    if not job_list.exists():
        write_csv(job_list, ids)
    opts = RunOptions(**{**FAST, **options})
    outcome = await Run(job_list, tmp_path / out, opts, credentials=creds, endpoint=fake.url).execute()
    lines = (tmp_path / out / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    by_id = {r["instanceId"]: r for r in results}
    assert len(by_id) == len(results), "a job has more than one result line"
    return outcome, by_id


async def test_all_succeed_with_full_records(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Every job gets one line with the fields the format promises; exit 0; summary counts them."""
    ids = [f"i-{n}" for n in range(20)]
    fake = await make_fake(instances(*ids))
    outcome, results = await run_jobs(tmp_path, fake, ids)
    assert outcome.exit_code == 0
    assert set(results) == set(ids)
    record = results["i-3"]
    assert record["status"] == "succeeded"
    assert record["imageId"].startswith("img-")
    assert record["error"] is None
    assert record["attempts"] == 1
    assert len(record["requestIds"]) == 1
    assert record["endedAt"] >= record["startedAt"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["byStatus"] == {"succeeded": 20, "failed": 0, "skipped": 0, "unknown": 0, "interrupted": 0}
    assert summary["apiCalls"]["byAction"] == {"DescribeCustomImages": 1, "CreateImage": 20}
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    attempts = [e for e in events if e["event"] == "api.attempt" and e["action"] == "CreateImage"]
    assert len(attempts) == 20
    assert {"limiterWaitSeconds", "apiSeconds", "requestId", "instanceId"} <= set(attempts[0])
    for path in (tmp_path / "run").iterdir():  # the secret is nowhere in the run's files
        assert CREDS.secret not in path.read_text(errors="replace"), path.name


async def test_second_run_same_day_skips_existing(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Running the same list again finds the images by name: all skipped, no new image, one listing call."""
    ids = [f"i-{n}" for n in range(5)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0})
    first, results1 = await run_jobs(tmp_path, fake, ids, out="first")
    second, results2 = await run_jobs(tmp_path, fake, ids, out="second")
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert {r["status"] for r in results2.values()} == {"skipped"}
    assert results2["i-1"]["imageId"] == results1["i-1"]["imageId"]
    assert "already exists" in results2["i-1"]["reason"]
    assert fake.calls["CreateImage"] == 5
    assert fake.inspect()["duplicateInstances"] == []


async def test_busy_instances_that_clear(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Busy instances are retried until free, then succeed; each costs rejected calls, not failures."""
    fleet = [FakeInstance("i-0", busy_until=0.3), FakeInstance("i-1", busy_until=0.2), FakeInstance("i-2")]
    fake = await make_fake(fleet)
    outcome, results = await run_jobs(tmp_path, fake, ["i-0", "i-1", "i-2"])
    assert outcome.exit_code == 0
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert results["i-0"]["attempts"] > 1
    assert fake.codes["OPERATION_DENIED_INSTANCE_IN_OPERATION"] >= 2


async def test_busy_past_timeout_fails_with_code(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An instance busy longer than --busy-timeout fails with OPERATION_DENIED_INSTANCE_IN_OPERATION."""
    fake = await make_fake([FakeInstance("i-0", busy_until=60), FakeInstance("i-1")])
    outcome, results = await run_jobs(tmp_path, fake, ["i-0", "i-1"], busy_timeout=0.2)
    assert outcome.exit_code == 1
    assert results["i-0"]["status"] == "failed"
    assert results["i-0"]["error"]["code"] == "OPERATION_DENIED_INSTANCE_IN_OPERATION"
    assert "busy after" in results["i-0"]["reason"]
    assert results["i-1"]["status"] == "succeeded"


async def test_busy_job_does_not_hold_a_worker(tmp_path: Path, make_fake: FakeFactory) -> None:
    """With one worker, a long-busy first job does not stop the others from finishing first."""
    ids = ["i-busy", *[f"i-{n}" for n in range(5)]]
    fake = await make_fake([FakeInstance("i-busy", busy_until=1.0), *instances(*ids[1:])])
    outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=1, backoff_base=0.2, backoff_cap=0.2)
    assert outcome.exit_code == 0
    order = list(results)
    assert order[-1] == "i-busy"


async def test_429_storm_slows_down_and_completes(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Client at 200/s against a 50/s server: 429s happen, the throttle lowers the rate, all jobs succeed."""
    ids = [f"i-{n}" for n in range(60)]
    fake = await make_fake(instances(*ids), rate_limit=50, burst=5)
    outcome, results = await run_jobs(tmp_path, fake, ids, rate=200.0)
    assert outcome.exit_code == 0
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert fake.codes["REQUEST_LIMIT_EXCEEDED"] > 0
    assert outcome.summary["throttleDecreases"] >= 1
    assert outcome.summary["apiCalls"]["byCode"]["REQUEST_LIMIT_EXCEEDED"] == fake.codes["REQUEST_LIMIT_EXCEEDED"]


async def test_transient_5xx_retried_then_succeed(tmp_path: Path, make_fake: FakeFactory) -> None:
    """500 and 503 are retried; the job succeeds on a later attempt and lists every request id."""
    fake = await make_fake(instances("i-0", "i-1"), scripts={"i-0": ["500", "503", "ok"]})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0", "i-1"])
    assert outcome.exit_code == 0
    assert results["i-0"]["status"] == "succeeded"
    assert results["i-0"]["attempts"] == 3
    assert len(results["i-0"]["requestIds"]) == 3


async def test_transient_errors_give_up_after_max_attempts(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A job that keeps failing with 5xx fails after --max-attempts with the last code."""
    fake = await make_fake(instances("i-0"), scripts={"i-0": ["503"] * 10})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], max_attempts=3)
    assert outcome.exit_code == 1
    assert results["i-0"]["error"]["code"] == "SERVICE_TEMPORARY_UNAVAILABLE"
    assert results["i-0"]["attempts"] == 3
    assert fake.calls["CreateImage"] == 3


@pytest.mark.parametrize("fault", ["lost", "504", "garbage"])
async def test_lost_or_ambiguous_answers_never_duplicate(tmp_path: Path, make_fake: FakeFactory, fault: str) -> None:
    """After an answer that may hide a commit, the image is found by name and adopted, not made twice."""
    ids = [f"i-{n}" for n in range(10)]
    fake = await make_fake(
        instances(*ids), cloud_kwargs={"image_ready_seconds": 0}, scripts={"i-3": [fault], "i-7": [fault]}
    )
    outcome, results = await run_jobs(tmp_path, fake, ids)
    assert outcome.exit_code == 0
    seen = fake.inspect()
    assert seen["duplicateInstances"] == []
    assert seen["createdPerInstance"] == dict.fromkeys(ids, 1)
    for adopted in ("i-3", "i-7"):
        assert results[adopted]["status"] == "succeeded"
        assert "adopted" in results[adopted]["reason"]
        assert results[adopted]["imageId"] == next(
            i.image_id for i in fake.cloud.images.values() if i.instance_id == adopted
        )


async def test_random_lost_responses_are_duplicate_free(tmp_path: Path, make_fake: FakeFactory) -> None:
    """With 30% of answers lost at random, every instance still has exactly one image."""
    ids = [f"i-{n}" for n in range(100)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0.05}, lost_response_rate=0.3, seed=3)
    outcome, results = await run_jobs(tmp_path, fake, ids)
    seen = fake.inspect()
    assert seen["lostResponses"] > 10
    assert outcome.exit_code == 0
    assert seen["createdPerInstance"] == dict.fromkeys(ids, 1)
    assert {r["status"] for r in results.values()} == {"succeeded"}


async def test_lost_answer_with_listing_lag_never_duplicates(tmp_path: Path, make_fake: FakeFactory) -> None:
    """The image of a lost answer is not listed yet at the first look-up; the retry finds the
    instance busy (IMAGING our image), so it looks again and adopts instead of creating a second."""
    fake = await make_fake(
        instances("i-0"),
        cloud_kwargs={"image_ready_seconds": 0.5, "list_lag_seconds": 0.2},
        scripts={"i-0": ["lost"]},
    )
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], backoff_base=0.1, backoff_cap=0.1)
    assert outcome.exit_code == 0
    assert "adopted" in results["i-0"]["reason"]
    assert fake.inspect()["createdPerInstance"] == {"i-0": 1}


async def test_dropped_before_commit_is_retried(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A connection dropped before anything was done: the look-up finds nothing, the retry creates it once."""
    fake = await make_fake(instances("i-0"), scripts={"i-0": ["drop"]})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"])
    assert outcome.exit_code == 0
    assert results["i-0"]["reason"] is None
    assert fake.calls["DescribeCustomImages"] == 2  # the listing, then the look-up
    assert fake.inspect()["createdPerInstance"] == {"i-0": 1}


async def test_permanent_errors_fail_at_once(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Not found, GPU and wrong status each fail on the first call with the API's code."""
    fleet = [FakeInstance("i-gpu", gpu=True), FakeInstance("i-run", status="RUNNING"), FakeInstance("i-ok")]
    fake = await make_fake(fleet)
    outcome, results = await run_jobs(tmp_path, fake, ["i-gpu", "i-run", "i-missing", "i-ok"])
    assert outcome.exit_code == 1
    codes = {i: (r["error"] or {}).get("code") for i, r in results.items()}
    assert codes == {
        "i-gpu": "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT",
        "i-run": "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT",
        "i-missing": "INVALID_INSTANCE_NOT_FOUND",
        "i-ok": None,
    }
    assert all(results[i]["attempts"] == 1 for i in ("i-gpu", "i-run", "i-missing"))
    assert results["i-missing"]["error"]["requestId"].startswith("T")
    assert outcome.summary["byErrorCode"]["INVALID_INSTANCE_NOT_FOUND"] == 1


async def test_quota_reached_mid_run_stops_with_exit_3(tmp_path: Path, make_fake: FakeFactory) -> None:
    """When the quota is reached, sending stops; the rest are interrupted with the reason; exit 3."""
    ids = [f"i-{n:02d}" for n in range(30)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_quota": 10})
    outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=2)
    assert outcome.exit_code == 3
    assert set(results) == set(ids)
    statuses = [r["status"] for r in results.values()]
    assert statuses.count("succeeded") == 10
    interrupted = [r for r in results.values() if r["status"] == "interrupted"]
    assert len(interrupted) == 20
    hit = [r for r in interrupted if r["error"] and r["error"]["code"] == "INVALID_IMAGE_QUOTA_EXCEED"]
    assert hit  # the job(s) whose own CreateImage met the quota: interrupted too, --resume retries them
    assert all("INVALID_IMAGE_QUOTA_EXCEED" in r["reason"] for r in interrupted if r not in hit)
    assert fake.calls["CreateImage"] <= 10 + 2  # at most the in-flight ones after the first refusal
    assert outcome.summary["stoppedBy"] == "fatal:INVALID_IMAGE_QUOTA_EXCEED"


async def test_bad_credentials_stop_before_any_create(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Refused credentials: no CreateImage at all, every job interrupted naming the code, exit 3."""
    ids = [f"i-{n}" for n in range(5)]
    fake = await make_fake(instances(*ids))
    bad = Credentials(CREDS.access_key_id, "wrong-secret-value")
    outcome, results = await run_jobs(tmp_path, fake, ids, creds=bad)
    assert outcome.exit_code == 3
    assert fake.calls.get("CreateImage", 0) == 0
    assert {r["status"] for r in results.values()} == {"interrupted"}
    assert all("AUTHFAILURE_SIGNATURE_FAILURE" in r["reason"] for r in results.values())
    for path in (tmp_path / "run").iterdir():
        assert "wrong-secret-value" not in path.read_text(errors="replace")


async def test_listing_failure_after_retries_is_fatal(tmp_path: Path, make_fake: FakeFactory) -> None:
    """If the starting listing cannot be read, nothing is created (duplicates cannot be ruled out)."""
    fake = await make_fake(instances("i-0"), error_rate=1.0)
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], max_attempts=2)
    assert outcome.exit_code == 3
    assert results["i-0"]["status"] == "interrupted"
    assert fake.calls.get("CreateImage", 0) == 0


async def test_tags_and_resource_group_are_sent(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Row tags and resource group reach the API, the four ownership tags after the row's."""
    fake = await make_fake(instances("i-0"))
    (tmp_path / "jobs.csv").write_text("instanceId,imageName,resourceGroupId,tags\ni-0,gold-1,rg-9,env=prod;team=web\n")
    outcome, _ = await run_jobs(tmp_path, fake, [])
    assert outcome.exit_code == 0
    image = next(iter(fake.cloud.images.values()))
    assert (image.image_name, image.resource_group_id) == ("gold-1", "rg-9")
    assert image.tags[:2] == [{"key": "env", "value": "prod"}, {"key": "team", "value": "web"}]
    assert [t["key"] for t in image.tags[2:]] == [
        "imagebatch-policy",
        "imagebatch-instance",
        "imagebatch-created",
        "imagebatch-run",
    ]


@pytest.mark.timeout(300)
async def test_2000_jobs_with_server_rate_limit_account_for_every_job_once(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """2,000 jobs, a 400/s server limit, busy instances, 5xx and lost answers: one line per job, one image each."""
    ids = [str(1_000_000_000_000_000_000 + n) for n in range(2000)]
    fleet = [FakeInstance(i, busy_until=0.5 if n % 10 == 0 else 0.0) for n, i in enumerate(ids)]
    fake = await make_fake(
        fleet,
        cloud_kwargs={"image_ready_seconds": 0.2},
        rate_limit=400,
        burst=20,
        error_rate=0.02,
        lost_response_rate=0.02,
        seed=11,
    )
    outcome, results = await run_jobs(tmp_path, fake, ids, rate=500.0, concurrency=16)
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2000
    assert set(results) == set(ids)
    assert outcome.exit_code == 0, outcome.summary
    seen = fake.inspect()
    assert seen["createdPerInstance"] == dict.fromkeys(ids, 1)
    assert outcome.summary["byStatus"]["succeeded"] == 2000


async def test_job_list_edited_under_a_running_job_changes_nothing(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Rows appended to the job list mid-run (valid duplicates, new ids, a bad row) are not read:
    the run acts on the copy it validated, one line and one image per job, counts never negative."""
    import anyio

    ids = [f"i-{n}" for n in range(60)]
    extra = [f"x-{n}" for n in range(10)]
    fake = await make_fake(instances(*ids, *extra))
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    run = Run(job_list, tmp_path / "run", RunOptions(rate=20, seed=1), credentials=CREDS, endpoint=fake.url)

    async def edit_the_list() -> None:
        # Polls outside state (a file, the fake's counters): there is no event to wait on.
        while not (tmp_path / "run" / "results.jsonl").exists() or not fake.calls.get("CreateImage"):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        with job_list.open("a") as handle:
            handle.write("".join(f"{i}\n" for i in ids[:10] + extra) + "bad id!\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(edit_the_list)
        outcome = await run.execute()
    assert outcome.exit_code == 0
    assert (outcome.summary["jobs"], outcome.summary["ended"], outcome.summary["pending"]) == (60, 60, 0)
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["instanceId"] for r in lines) == sorted(ids)
    seen = fake.inspect()
    assert seen["duplicateInstances"] == []
    assert seen["images"] == 60
