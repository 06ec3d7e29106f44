"""No job is reported failed, skipped or lost while its image may exist; stops end every job honestly.

Whole runs against the project's fake server over loopback. Faults the fake cannot script on its
own (a look-up that never answers, credentials revoked mid-run, a listing that hangs) come from
small subclasses that change one action's answer and leave the rest of the fake as it is.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from batch.fake import FakeCloud, FakeConfig, FakeInstance, FakeZenlayer
from batch.fake.errors import FakeApiError
from batch.fake.fleet import instance_id
from batch.journal import read_journal
from batch.options import RunOptions
from batch.policy import LOOKUP_ATTEMPTS
from batch.run import Progress, Run

from .conftest import CREDS, FakeFactory, instances, write_csv
from .test_crash_safety import ENV, FakeProcess, wait_for_results
from .test_runner import FAST, run_jobs

pytestmark = pytest.mark.anyio


class LookupsFail(FakeZenlayer):
    """A fake whose look-ups by name (DescribeCustomImages with ``imageName``) answer 503."""

    def _dispatch(self, request: web.Request, body: bytes, action: str) -> dict[str, Any] | None:
        if action == "DescribeCustomImages" and b'"imageName"' in body:
            raise FakeApiError("scripted look-up failure", code="SERVICE_TEMPORARY_UNAVAILABLE", status=503)
        return super()._dispatch(request, body, action)


class RevokesKey(FakeZenlayer):
    """A fake that stops accepting its access key right after the n-th CreateImage it answers."""

    def __init__(self, cloud: FakeCloud, config: FakeConfig, *, after: int) -> None:
        super().__init__(cloud, config)
        self.after = after
        self.calls_after_revoke: list[str] = []

    def _dispatch(self, request: web.Request, body: bytes, action: str) -> dict[str, Any] | None:
        if self.config.access_key_secret == "revoked":
            self.calls_after_revoke.append(action)
        return super()._dispatch(request, body, action)

    def _create_image(self, params: dict[str, Any]) -> dict[str, Any] | None:
        if self.calls["CreateImage"] >= self.after:
            self.config.access_key_secret = "revoked"
        return super()._create_image(params)


class HeldListing(FakeZenlayer):
    """A fake whose first listing (DescribeCustomImages without ``imageName``) waits for ``release``."""

    def __init__(self, cloud: FakeCloud, config: FakeConfig) -> None:
        super().__init__(cloud, config)
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-ZC-Action") == "DescribeCustomImages":
            body = await request.read()
            if b'"imageName"' not in body:
                await self.release.wait()
        return await super()._handle(request)


def start_run(job_list: Path, out: Path, url: str, *flags: str) -> subprocess.Popen[str]:
    """`imagebatch run` in its own process, quiet, with the fake's credentials."""
    return subprocess.Popen(
        [sys.executable, "-m", "batch", "run", str(job_list), "--out", str(out), "--endpoint", url, "--quiet", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


@pytest.fixture
async def own_fakes() -> AsyncIterator[Callable[[FakeZenlayer], Any]]:
    """Start fakes built by the test; stop them after it."""
    started: list[FakeZenlayer] = []

    async def start(fake: FakeZenlayer) -> FakeZenlayer:
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.stop()


def images_of(fake: FakeZenlayer) -> dict[str, str]:
    """Image id per source instance (the fake holds at most one each in these tests)."""
    return {i.instance_id: i.image_id for i in fake.cloud.images.values()}


# ----- item 3: a CreateImage that may have been applied is looked up before the job ends -----


async def test_lost_answers_with_one_attempt_are_adopted_not_failed(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--max-attempts 1 with 20% of answers lost: every lost answer is looked up and adopted, none fails."""
    ids = [f"i-{n:02d}" for n in range(40)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0}, lost_response_rate=0.2, seed=4)
    outcome, results = await run_jobs(tmp_path, fake, ids, max_attempts=1)
    seen = fake.inspect()
    assert seen["lostResponses"] >= 3
    assert outcome.exit_code == 0, outcome.summary
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert seen["createdPerInstance"] == dict.fromkeys(ids, 1)
    assert {i: r["imageId"] for i, r in results.items()} == images_of(fake)
    adopted = [r for r in results.values() if r["reason"] and "adopted" in r["reason"]]
    assert len(adopted) == seen["lostResponses"]


async def test_slow_answers_get_longer_look_ups_and_are_adopted(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Every answer slower than --timeout: the listing and the look-ups wait longer on each try, so
    each image made by a timed-out CreateImage is found and adopted; no job fails, none is made twice."""
    ids = [f"i-{n}" for n in range(4)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_ready_seconds": 0}, latency=0.4)
    outcome, results = await run_jobs(tmp_path, fake, ids, total_timeout=0.2, max_attempts=2)
    assert {r["status"] for r in results.values()} == {"succeeded"}, results
    assert outcome.exit_code == 0
    assert fake.inspect()["createdPerInstance"] == dict.fromkeys(ids, 1)
    assert {i: r["imageId"] for i, r in results.items()} == images_of(fake)
    assert all("adopted" in r["reason"] for r in results.values())


async def test_look_ups_that_cannot_answer_end_unknown(
    tmp_path: Path, own_fakes: Callable[[FakeZenlayer], Any]
) -> None:
    """A lost answer whose look-ups all fail ends `unknown` with OUTCOME_UNKNOWN after its own look-up
    budget: never `failed`, and no second CreateImage."""
    cloud = FakeCloud(instances("i-0", "i-1"), image_ready_seconds=0)
    fake = await own_fakes(LookupsFail(cloud, FakeConfig(scripts={"i-0": ["lost"]})))
    _, results = await run_jobs(tmp_path, fake, ["i-0", "i-1"], max_attempts=2)
    record = results["i-0"]
    assert record["status"] == "unknown"
    assert record["imageId"] is None
    assert record["error"]["code"] == "OUTCOME_UNKNOWN"
    assert "may exist" in record["error"]["message"]
    assert "--resume looks it up again" in record["error"]["message"]
    assert "SERVICE_TEMPORARY_UNAVAILABLE" in record["error"]["message"]
    assert results["i-1"]["status"] == "succeeded"
    assert fake.cloud.created_per_instance["i-0"] == 1
    assert fake.calls["CreateImage"] == 2
    assert fake.calls["DescribeCustomImages"] == 1 + LOOKUP_ATTEMPTS  # the listing, then the look-ups
    assert record["attempts"] == 1 + LOOKUP_ATTEMPTS


# ----- item 32: a fatal stop records interrupted, after looking up what may exist -----------


async def test_quota_stop_looks_up_a_lost_answer_and_interrupts_the_rest(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """A job waiting to retry after a lost answer when the quota stops the run is looked up and
    adopted; the jobs never started are `interrupted` (not `skipped`) with the stop's code."""
    ids = [f"i-{n}" for n in range(10)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_quota": 5}, scripts={"i-1": ["lost"]})
    # One worker and a long back-off: i-1's retry is still waiting when i-5 meets the quota.
    outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=1, backoff_base=30.0, backoff_cap=30.0)
    assert outcome.exit_code == 3
    statuses = {i: r["status"] for i, r in results.items()}
    assert statuses == {
        **dict.fromkeys(["i-0", "i-1", "i-2", "i-3", "i-4"], "succeeded"),
        **dict.fromkeys(["i-5", "i-6", "i-7", "i-8", "i-9"], "interrupted"),
    }
    assert results["i-1"]["imageId"] == images_of(fake)["i-1"]
    assert "adopted" in results["i-1"]["reason"]
    assert all("INVALID_IMAGE_QUOTA_EXCEED" in results[i]["reason"] for i in ["i-6", "i-7", "i-8", "i-9"])
    assert fake.inspect()["createdPerInstance"] == dict.fromkeys(["i-0", "i-1", "i-2", "i-3", "i-4"], 1)


async def test_quota_stop_with_nothing_found_interrupts_after_the_look_up(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """A job whose connection dropped before anything was made is looked up at the stop, found
    missing, and recorded `interrupted`, saying so."""
    ids = [f"i-{n}" for n in range(6)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_quota": 3}, scripts={"i-1": ["drop"]})
    outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=1, backoff_base=30.0, backoff_cap=30.0)
    assert outcome.exit_code == 3
    record = results["i-1"]
    assert record["status"] == "interrupted"
    assert "INVALID_IMAGE_QUOTA_EXCEED" in record["reason"]
    assert "a look-up by name found no image" in record["reason"]
    assert fake.calls["DescribeCustomImages"] == 2  # the listing and i-1's look-up
    assert "i-1" not in images_of(fake)


async def test_revoked_key_mid_run_ends_maybe_created_jobs_unknown_without_more_calls(
    tmp_path: Path, own_fakes: Callable[[FakeZenlayer], Any]
) -> None:
    """Credentials refused mid-run: a job whose answer was lost ends `unknown` (its look-up cannot
    be sent), the others `interrupted`, and nothing more is sent once the key is refused."""
    ids = [f"i-{n}" for n in range(8)]
    cloud = FakeCloud(instances(*ids), image_ready_seconds=0)
    fake = await own_fakes(RevokesKey(cloud, FakeConfig(scripts={"i-1": ["lost"]}), after=4))
    outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=1, backoff_base=30.0, backoff_cap=30.0)
    assert outcome.exit_code == 3
    record = results["i-1"]
    assert record["status"] == "unknown"
    assert record["error"]["code"] == "OUTCOME_UNKNOWN"
    assert "may exist" in record["error"]["message"]
    assert results["i-4"]["error"]["code"] == "AUTHFAILURE_SIGNATURE_FAILURE"
    assert {results[i]["status"] for i in ["i-5", "i-6", "i-7"]} == {"interrupted"}
    assert fake.calls_after_revoke == ["CreateImage"]  # the refused one; no look-up after it


async def test_wait_run_ends_after_a_fatal_stop(tmp_path: Path, make_fake: FakeFactory) -> None:
    """With --wait, a fatal stop releases the awaited images and the run ends (it used to poll forever)."""
    ids = [f"i-{n}" for n in range(6)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"image_quota": 2, "image_ready_seconds": 600})
    with anyio.fail_after(60):
        outcome, results = await run_jobs(tmp_path, fake, ids, concurrency=1, wait=True, poll_interval=0.05)
    assert outcome.exit_code == 3
    # Awaited images not yet AVAILABLE are not final: interrupted, with their image id, for --resume.
    assert [results[i]["status"] for i in ids] == ["interrupted"] * 6
    assert results["i-0"]["imageId"] is not None
    assert "--resume waits for it" in results["i-0"]["reason"]
    fake.cloud.image_quota = None
    fake.cloud.image_ready_seconds = 0
    for image in fake.cloud.images.values():
        image.status = "AVAILABLE"
    again = await Run(None, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=fake.url).execute()
    assert again.exit_code == 0
    assert fake.inspect()["duplicateInstances"] == []


# ----- item 30: a RUNNING instance says what to do -------------------------------------------


async def test_running_instance_reason_says_stop_it_first(tmp_path: Path, make_fake: FakeFactory) -> None:
    """OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT comes with a reason that says the instance must be STOPPED."""
    fake = await make_fake([FakeInstance("i-run", status="RUNNING")])
    _, results = await run_jobs(tmp_path, fake, ["i-run"])
    record = results["i-run"]
    assert record["status"] == "failed"
    assert record["error"]["code"] == "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT"
    assert (
        record["reason"]
        == "CreateImage needs a STOPPED instance; stop it first, or run with --stop-running (stop, image, start again)"
    )


# ----- item 23: progress says what the run is doing ------------------------------------------


async def test_progress_shows_the_listing_then_the_end(
    tmp_path: Path, own_fakes: Callable[[FakeZenlayer], Any]
) -> None:
    """While the starting listing is unanswered, progress says "listing" with its page and one
    request in flight; the last snapshot says "ended" with none."""
    fake = await own_fakes(HeldListing(FakeCloud(instances("i-0")), FakeConfig()))
    job_list = write_csv(tmp_path / "jobs.csv", ["i-0"])
    seen: list[Progress] = []
    run = Run(
        job_list, tmp_path / "run", RunOptions(**FAST), credentials=CREDS, endpoint=fake.url, progress=seen.append
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run.execute)
        with anyio.fail_after(30):
            while not seen:  # noqa: ASYNC110 - progress is a callback; nothing to wait on
                await anyio.sleep(0.05)
        fake.release.set()
    listing = seen[0]
    assert (listing.phase, listing.phase_detail) == ("listing", "page 1, 0 images")
    assert listing.requests_in_flight == 1
    assert listing.api_calls == 0
    assert (seen[-1].phase, seen[-1].requests_in_flight) == ("ended", 0)
    assert seen[-1].by_status == {"succeeded": 1}


def test_sigterm_during_a_hanging_listing_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM while the starting listing hangs: the run abandons it at once (no grace wait), sends
    nothing, and exits 143 with every job still pending."""
    fake = FakeProcess("--instances", "3", "--latency", "600")
    proc: subprocess.Popen[str] | None = None
    try:
        job_list = write_csv(tmp_path / "jobs.csv", [instance_id(n) for n in range(1, 4)])
        out = tmp_path / "run"
        # A grace (and time-out) no test would wait out.
        proc = start_run(job_list, out, fake.url, "--grace", "600", "--timeout", "900")
        deadline = time.monotonic() + 30
        while fake.inspect()["calls"].get("DescribeCustomImages", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)  # far less than the 600 s grace
        assert proc.returncode == 143
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["stoppedBy"], summary["pending"], summary["ended"]) == ("SIGTERM", 3, 0)
        assert fake.inspect()["calls"].get("CreateImage", 0) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        # Killed, not stopped: a graceful stop would wait for the 600 s answer in progress.
        fake.proc.kill()
        fake.proc.communicate()


# ----- item 8: events.jsonl is as durable as the results -------------------------------------


def test_sigkill_keeps_the_attempt_event_of_every_recorded_result(tmp_path: Path) -> None:
    """Killed with SIGKILL three times mid-run (and resumed): every request id of every result in
    the journal has its api.attempt event in events.jsonl (events are written before each journal
    group, not only once a second)."""
    count = 600
    fake = FakeProcess("--instances", str(count), "--latency", "0.005", "--lost-response-rate", "0.05", "--seed", "2")
    job_list = write_csv(tmp_path / "jobs.csv", [instance_id(n) for n in range(1, count + 1)])
    out = tmp_path / "run"
    try:
        for kill in range(1, 4):
            flags = ("--resume", "--rate", "300", "--backoff-base", "0.05", "--backoff-cap", "0.2")
            proc = start_run(job_list, out, fake.url, *flags)
            wait_for_results(out, 120 * kill)
            proc.kill()
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
        fake.stop()
    results = read_journal(out / "journal.log").results
    assert len(results) >= 3 * 120
    logged: set[str] = set()
    for line in (out / "events.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if event.get("event") == "api.attempt" and event.get("requestId"):
            logged.add(event["requestId"])
    missing = {i: r["requestIds"] for i, r in results.items() if not set(r["requestIds"]) <= logged}
    assert not missing, f"{len(missing)} result(s) without their attempt events"


# ----- a new image listed late ----------------------------------------------------------------


@pytest.mark.parametrize(("lookup_delay", "duplicates_expected"), [(1.0, False), (0.0, True)])
async def test_lost_answers_with_an_api_that_lists_new_images_late(
    tmp_path: Path, make_fake: FakeFactory, lookup_delay: float, duplicates_expected: bool
) -> None:
    """An API that lists a new image only after 0.6 s, while the image is made in 0.05 s: with
    --lookup-delay past that lag no lost answer becomes a second image (with none, some do: the
    test can see the fault it guards against)."""
    ids = [f"i-{n}" for n in range(30)]
    fake = await make_fake(
        instances(*ids),
        cloud_kwargs={"image_ready_seconds": 0.05, "list_lag_seconds": 0.6},
        lost_response_rate=0.3,
        seed=3,
    )
    outcome, results = await run_jobs(tmp_path, fake, ids, lookup_delay=lookup_delay)
    seen = fake.inspect()
    assert seen["lostResponses"] >= 3
    assert set(results) == set(ids)
    assert bool(seen["duplicateInstances"]) is duplicates_expected
    if not duplicates_expected:
        assert outcome.exit_code == 0
        assert seen["images"] == 30


async def test_a_429_with_retry_after_is_not_resent_sooner(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A 429 that says Retry-After: the job's CreateImage waits at least that long (end to end:
    the fake's header, the client's parsing, the run's back-off)."""
    fake = await make_fake(instances("i-0", "i-1"), retry_after=True, scripts={"i-0": ["429", "ok"]})
    outcome, results = await run_jobs(tmp_path, fake, ["i-0", "i-1"])
    assert outcome.exit_code == 0
    assert results["i-0"]["status"] == "succeeded"
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    retries = [e for e in events if e["event"] == "job.retry_scheduled" and e.get("instanceId") == "i-0"]
    assert retries
    assert retries[0]["code"] == "REQUEST_LIMIT_EXCEEDED"
    assert retries[0]["backoffSeconds"] >= 1.0


async def test_a_look_up_that_finds_a_failed_image_fails_the_job(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Without --wait, a lost answer whose image is found FAILED ends the job IMAGE_FAILED, not succeeded."""
    fake = await make_fake(
        instances("i-0"),
        cloud_kwargs={"image_ready_seconds": 0.05, "failed_images": ["i-0"]},
        scripts={"i-0": ["lost"]},
    )
    outcome, results = await run_jobs(tmp_path, fake, ["i-0"], lookup_delay=0.3)
    record = results["i-0"]
    assert record["status"] == "failed"
    assert record["error"]["code"] == "IMAGE_FAILED"
    assert record["imageStatus"] == "FAILED"
    assert outcome.exit_code == 1
    assert fake.inspect()["images"] == 1


async def test_an_api_outage_stops_the_run_instead_of_failing_every_job(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """Every CreateImage answered 503 (an outage after the listing): the run stops with
    API_UNREACHABLE, exit 3, jobs interrupted; --resume against a healthy API images them all."""
    ids = [f"i-{n:02d}" for n in range(40)]
    sick = await make_fake(instances(*ids), scripts={i: ["503"] * 30 for i in ids})
    outcome, results = await run_jobs(tmp_path, sick, ids, max_attempts=8)
    assert outcome.exit_code == 3
    assert outcome.summary["stoppedBy"] == "fatal:API_UNREACHABLE"
    assert not [r for r in results.values() if r["status"] == "failed"]
    assert sick.inspect()["images"] == 0
    healthy = await make_fake(instances(*ids))  # the outage is over: the same fleet, answering
    again = await Run(
        None, tmp_path / "run", RunOptions(resume=True, lookup_delay=0.05), credentials=CREDS, endpoint=healthy.url
    ).execute()
    assert again.exit_code == 0
    assert again.summary["byStatus"]["succeeded"] == 40
    assert healthy.inspect()["duplicateInstances"] == []
