"""--stop-running: stop -> image -> start, the cap on instances down, and the restart guarantee."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from batch.fake import FakeInstance
from batch.fake.fleet import instance_id
from batch.options import RunOptions
from batch.run import Run, RunOutcome

from .conftest import CREDS, FakeFactory, write_csv
from .test_crash_safety import fake_factory, results_of, start_run, wait_for_results

__all__ = ["fake_factory"]  # a fixture used here, defined with the crash-safety tests

pytestmark = pytest.mark.anyio

#: a fake whose power transitions and images take a tenth of a second
QUICK = {"stop_seconds": 0.1, "force_stop_seconds": 0.05, "boot_seconds": 0.1, "image_ready_seconds": 0.1}
LIVE = {
    "stop_running": True,
    "poll_interval": 0.05,
    "rate": 500.0,
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "lookup_delay": 0.05,
    "seed": 1,
}


async def live_run(
    tmp_path: Path, fake: Any, rows: list[dict[str, str]], **options: Any
) -> tuple[RunOutcome, dict[str, Any]]:
    """Run a job list with --stop-running against the fake; return the outcome and results by instance."""
    job_list = tmp_path / "jobs.csv"
    columns = sorted({k for row in rows for k in row})
    body = "".join(",".join(r.get(c, "") for c in columns) + "\n" for r in rows)
    job_list.write_text(",".join(columns) + "\n" + body)
    outcome = await Run(
        job_list, tmp_path / "run", RunOptions(**{**LIVE, **options}), credentials=CREDS, endpoint=fake.url
    ).execute()
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    return outcome, {r["instanceId"]: r for r in map(json.loads, lines)}


async def test_running_fleet_is_stopped_imaged_and_started_under_the_cap(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """12 RUNNING and 3 STOPPED instances, --max-stopped 3: one image each, every RUNNING one is
    RUNNING again, the STOPPED ones are never started, and no more than 3 were down at once."""
    running = [f"r-{n}" for n in range(12)]
    stopped = [f"s-{n}" for n in range(3)]
    fleet = [FakeInstance(i, status="RUNNING") for i in running] + [FakeInstance(i) for i in stopped]
    fake = await make_fake(fleet, cloud_kwargs=QUICK)
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": i} for i in running + stopped], max_stopped="3")
    seen = fake.inspect()
    assert outcome.exit_code == 0, outcome.summary
    assert {r["status"] for r in results.values()} == {"succeeded"}
    assert seen["duplicateInstances"] == []
    assert seen["images"] == 15
    assert seen["notRunningAnymore"] == []
    assert 1 <= seen["peakStopped"] <= 3
    assert all(seen["instanceStates"][i] == "STOPPED" for i in stopped)
    assert seen["stopWithoutForceField"] == 0
    for i in running:
        power = results[i]["power"]
        assert power["stateAtStart"] == "RUNNING"
        assert power["actions"] == ["stopped", "started"]
        assert power["finalState"] == "RUNNING"
        assert power["downtimeSeconds"] is not None
        assert results[i]["imageStatus"] == "AVAILABLE"
    assert results["s-0"]["power"]["actions"] == []
    assert results["s-0"]["power"]["finalState"] == "STOPPED"


async def test_per_group_cap_holds(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--max-stopped-per-group 1: two replicas of one group are never down together."""
    rows = [{"instanceId": f"r-{n}", "group": f"g{n % 2}"} for n in range(8)]
    fleet = [FakeInstance(r["instanceId"], status="RUNNING") for r in rows]
    fake = await make_fake(fleet, cloud_kwargs=QUICK)
    outcome, _ = await live_run(tmp_path, fake, rows, max_stopped="8", max_stopped_per_group=1)
    seen = fake.inspect()
    assert outcome.exit_code == 0
    assert seen["peakStopped"] <= 2  # one per group, two groups
    assert seen["notRunningAnymore"] == []


@pytest.mark.parametrize(
    ("case", "fleet_kwargs", "config", "code"),
    [
        pytest.param("gpu", {"gpu": True}, {}, "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT", id="create-refused"),
        pytest.param("image-fails", {}, {"failed_images": ["x-0"]}, "IMAGE_FAILED", id="image-failed"),
        pytest.param("quota", {}, {"quota": 0}, "INVALID_IMAGE_QUOTA_EXCEED", id="fatal-quota"),
        pytest.param("5xx", {}, {"scripts": {"x-0": ["503"] * 10}}, "SERVICE_TEMPORARY_UNAVAILABLE", id="gave-up"),
        pytest.param("hang", {"hangs": True}, {}, None, id="graceful-stop-hangs-then-forced"),
    ],
)
async def test_every_failure_after_a_stop_ends_with_the_instance_running(
    tmp_path: Path, make_fake: FakeFactory, case: str, fleet_kwargs: dict[str, Any], config: dict[str, Any],
    code: str | None,
) -> None:
    """Whatever ends a job after its instance was stopped, the instance is RUNNING at the end."""
    cloud = dict(QUICK)
    if "quota" in config:
        cloud["image_quota"] = config.pop("quota")
    if "failed_images" in config:
        cloud["failed_images"] = config.pop("failed_images")
    fake = await make_fake([FakeInstance("x-0", status="RUNNING", **fleet_kwargs)], cloud_kwargs=cloud, **config)
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": "x-0"}], stop_timeout=0.5, max_attempts=2)
    seen = fake.inspect()
    assert seen["instanceStates"]["x-0"] == "RUNNING", (case, results)
    assert seen["notRunningAnymore"] == []
    record = results["x-0"]
    assert record["power"]["finalState"] == "RUNNING"
    if code is None:
        assert record["status"] == "succeeded"
        assert record["power"]["forced"] is True
    else:
        assert (record["error"] or {}).get("code") == code, record
    assert outcome.exit_code in (0, 1, 3)


@pytest.mark.parametrize(
    ("scripts", "actions", "forced"),
    [
        pytest.param(
            {"StartInstances": {"x-0": ["fail", "fail", "ok"]}}, ["stopped", "started"], False, id="start-fails-twice"
        ),
        pytest.param({"StopInstances": {"x-0": ["lost"]}}, ["started"], False, id="stop-answer-lost"),
        pytest.param({"StartInstances": {"x-0": ["lost"]}}, ["stopped", "started"], False, id="start-answer-lost"),
        pytest.param({"StopInstances": {"x-0": ["503", "ok"]}}, ["stopped", "started"], False, id="stop-503"),
    ],
)
async def test_power_faults_still_end_with_the_instance_running(
    tmp_path: Path, make_fake: FakeFactory, scripts: dict[str, Any], actions: list[str], forced: bool
) -> None:
    """Stop and start calls that fail, lose their answer or answer 503: one image, and RUNNING again."""
    fake = await make_fake([FakeInstance("x-0", status="RUNNING")], cloud_kwargs=QUICK, scripts=scripts)
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": "x-0"}])
    seen = fake.inspect()
    assert outcome.exit_code == 0, results
    assert seen["instanceStates"]["x-0"] == "RUNNING"
    assert seen["images"] == 1
    record = results["x-0"]
    assert record["status"] == "succeeded"
    assert record["power"]["finalState"] == "RUNNING"
    assert record["power"]["actions"][-1] == "started"
    assert record["power"]["forced"] is forced


async def test_force_stop_forces_from_the_start(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--force-stop: StopInstances with forceShutdown true the first time; the result says forced."""
    fake = await make_fake([FakeInstance("x-0", status="RUNNING")], cloud_kwargs=QUICK)
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": "x-0"}], force_stop=True)
    seen = fake.inspect()
    assert outcome.exit_code == 0
    assert (seen["forcedStops"], seen["gracefulStops"]) == (1, 0)
    assert results["x-0"]["power"]["actions"] == ["forced", "started"]


async def test_recycled_and_existing_image_instances_are_never_stopped(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A RECYCLE instance fails with INSTANCE_RECYCLE; one whose image already exists is skipped
    before anything is stopped."""
    fake = await make_fake(
        [FakeInstance("x-0", status="RECYCLE"), FakeInstance("x-1")], cloud_kwargs=QUICK
    )
    fake.cloud.create_image("x-1", "x-1-done", None, [])  # as if an earlier run had made it
    fake.cloud.instances["x-1"].status = "RUNNING"
    outcome, results = await live_run(
        tmp_path, fake, [{"instanceId": "x-0"}, {"instanceId": "x-1", "imageName": "x-1-done"}]
    )
    seen = fake.inspect()
    assert results["x-0"]["error"]["code"] == "INSTANCE_RECYCLE"
    assert results["x-1"]["status"] == "skipped"
    assert (seen["forcedStops"], seen["gracefulStops"]) == (0, 0)
    assert outcome.exit_code == 1


async def test_an_instance_that_cannot_be_started_ends_the_run_with_exit_5(
    tmp_path: Path, make_fake: FakeFactory
) -> None:
    """StartInstances refused for good: the job ends, the run's final restore tries again, and the
    run exits 5 naming the instance."""
    from batch.report import render_summary

    fake = await make_fake(
        [FakeInstance("x-0", status="RUNNING")], cloud_kwargs=QUICK, scripts={"StartInstances": {"x-0": ["fail"] * 50}}
    )
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": "x-0"}], start_timeout=1.0)
    assert outcome.exit_code == 5
    assert outcome.summary["power"]["instancesLeftStopped"] == ["x-0"]
    assert results["x-0"]["power"]["finalState"] == "STOPPED"
    text = render_summary(outcome.summary, out_dir=outcome.out_dir)
    assert "NOT RUNNING 1 instance(s) this run stopped: 'x-0'" in text
    assert text.splitlines()[-1].strip().startswith("imagebatch run --out")


@pytest.mark.parametrize(
    ("text", "jobs", "want"),
    [("10%", 1000, 100), ("10%", 5, 1), ("100%", 7, 7), ("3", 1000, 3), (" 25 ", 10, 25), ("0.5%", 1000, 5)],
)
def test_max_stopped_is_a_count_or_a_share(text: str, jobs: int, want: int) -> None:
    """--max-stopped N or N% of the list, at least 1."""
    from batch.options import parse_max_stopped

    assert parse_max_stopped(text, jobs) == want


@pytest.mark.parametrize("text", ["0", "-1", "0%", "101%", "x", "nan%", ""])
def test_bad_max_stopped_is_refused(text: str) -> None:
    """A cap that is not a positive count or a share in (0, 100] is a usage error naming the flag."""
    from batch.errors import UsageError
    from batch.options import parse_max_stopped

    with pytest.raises(UsageError, match="--max-stopped"):
        parse_max_stopped(text, 100)


async def test_leave_stopped_images_and_leaves_them_stopped(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--leave-stopped: stopped and imaged, not started; no exit 5 for what was asked."""
    fleet = [FakeInstance(f"r-{n}", status="RUNNING") for n in range(4)]
    fake = await make_fake(fleet, cloud_kwargs=QUICK)
    outcome, results = await live_run(
        tmp_path, fake, [{"instanceId": f"r-{n}"} for n in range(4)], leave_stopped=True, max_stopped="2"
    )
    seen = fake.inspect()
    assert outcome.exit_code == 0
    assert sorted(seen["notRunningAnymore"]) == [f"r-{n}" for n in range(4)]
    assert all(r["power"]["finalState"] == "STOPPED" for r in results.values())



# ----- crashes and signals ------------------------------------------------------------------------

LIVE_FLAGS = (
    "--stop-running",
    "--max-stopped",
    "20",
    "--poll-interval",
    "0.1",
    "--rate",
    "400",
    "--stop-timeout",
    "5",
    "--start-timeout",
    "20",
)
FAKE_POWER = (
    "--running-fraction",
    "1",
    "--stop-seconds",
    "0.2",
    "--force-stop-seconds",
    "0.1",
    "--boot-seconds",
    "0.2",
    "--image-ready-seconds",
    "0.3",
    "--latency",
    "0.005",
)


@pytest.mark.timeout(300)
def test_kill_9_at_random_points_then_resume_restores_every_instance(tmp_path: Path, fake_factory: Any) -> None:
    """Killed with SIGKILL five times while every action loses answers, then resumed: every instance
    RUNNING at the start is RUNNING at the end, one image each, one result line per job, and never
    more than the cap down at once."""
    count = 200
    fake = fake_factory(
        "--instances", str(count), *FAKE_POWER, "--lost-response-rate", "0.08", "--lost-response-actions", "*",
        "--seed", "7",
    )
    ids = [instance_id(n) for n in range(1, count + 1)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    rng = random.Random(909)
    kills = 0
    for _ in range(5):
        proc = start_run(job_list, out, fake.url, *LIVE_FLAGS)
        time.sleep(rng.uniform(0.8, 2.5))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=30)
    assert kills >= 4, "the run finished before it could be killed often enough"
    final = start_run(job_list, out, fake.url, *LIVE_FLAGS)
    _stdout, stderr = final.communicate(timeout=200)
    assert final.returncode == 0, stderr
    results = results_of(out)
    assert sorted(r["instanceId"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} == {"succeeded"}
    seen = fake.inspect()
    assert seen["notRunningAnymore"] == []
    assert seen["duplicateInstances"] == []
    assert seen["images"] == count
    assert seen["peakStopped"] <= 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["power"]["instancesLeftStopped"] == []


@pytest.mark.timeout(120)
def test_sigterm_starts_what_it_stopped_within_the_grace(tmp_path: Path, fake_factory: Any) -> None:
    """SIGTERM mid-cycle: exit 143, and every instance the run stopped is RUNNING again (started
    within the grace); --resume then finishes the rest."""
    count = 60
    fake = fake_factory("--instances", str(count), *FAKE_POWER, "--seed", "3")
    ids = [instance_id(n) for n in range(1, count + 1)]
    job_list = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "run"
    proc = start_run(job_list, out, fake.url, *LIVE_FLAGS, "--max-stopped", "10", "--grace", "15")
    wait_for_results(out, 5, timeout=60)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    seen = fake.inspect()
    assert seen["notRunningAnymore"] == []
    assert json.loads((out / "summary.json").read_text())["power"]["instancesLeftStopped"] == []
    final = start_run(job_list, out, fake.url, *LIVE_FLAGS)
    final.communicate(timeout=120)
    assert final.returncode == 0
    assert fake.inspect()["duplicateInstances"] == []
    assert len(results_of(out)) == count


# ----- the third hostile pass --------------------------------------------------------------------


async def test_resume_starts_what_is_owed_even_when_every_job_ended(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run that ended with exit 5 (its start refused for good): a --resume, with every job ended,
    still starts the instance first, and exits with what the jobs give."""
    fake = await make_fake(
        [FakeInstance("x-0", status="RUNNING")], cloud_kwargs=QUICK, scripts={"StartInstances": {"x-0": ["fail"] * 50}}
    )
    outcome, _ = await live_run(tmp_path, fake, [{"instanceId": "x-0"}], start_timeout=1.0)
    assert outcome.exit_code == 5
    healthy = await make_fake([FakeInstance("x-0")], cloud_kwargs=QUICK)  # the API lets it start now
    again = await Run(
        None, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=healthy.url
    ).execute()
    assert again.exit_code == 0
    assert healthy.inspect()["instanceStates"]["x-0"] == "RUNNING"
    assert again.summary["power"]["instancesLeftStopped"] == []


async def test_a_hanging_stop_whose_answer_was_lost_is_forced(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A graceful stop that hangs and whose answer was lost still gets a forced stop after
    --stop-timeout, then the instance is imaged and started."""
    fake = await make_fake(
        [FakeInstance("x-0", status="RUNNING", hangs=True)],
        cloud_kwargs=QUICK,
        scripts={"StopInstances": {"x-0": ["lost"]}},
    )
    outcome, results = await live_run(tmp_path, fake, [{"instanceId": "x-0"}], stop_timeout=0.5)
    assert outcome.exit_code == 0, results
    assert fake.inspect()["instanceStates"]["x-0"] == "RUNNING"
    assert results["x-0"]["power"]["forced"] is True
    assert fake.inspect()["images"] == 1


async def test_restore_forces_a_stuck_stop_and_gives_up_on_gone_instances(make_fake: FakeFactory) -> None:
    """The final restore forces an instance stuck STOPPING and starts it; an owed instance that no
    longer exists is owed no more (reported as gone) instead of blocking every resume."""
    import anyio

    from batch.client import ZecClient
    from batch.power import PowerLedger, restore_power

    fake = await make_fake([FakeInstance("x-0", status="RUNNING", hangs=True)], cloud_kwargs=QUICK)
    fake.cloud.stop_instances(["x-0"], force=False)  # hangs in STOPPING
    started: list[str] = []
    ledger = PowerLedger(record_started=started.append)
    ledger.stop_sent("x-0")
    ledger.stop_sent("x-gone")
    async with ZecClient(fake.url, CREDS) as client:
        left = await restore_power(client, ledger, deadline=anyio.current_time() + 10, interval=0.1)
    assert left == []
    assert fake.inspect()["instanceStates"]["x-0"] == "RUNNING"
    assert ledger.gone == {"x-gone": "NOT_FOUND"}
    assert sorted(started) == ["x-0", "x-gone"]


def test_resume_flags_are_checked_against_the_runs_options() -> None:
    """--leave-stopped on a resume is checked once combined with the run's --stop-running, not before."""
    from batch.errors import UsageError

    RunOptions(resume=True, leave_stopped=True).check(combined=False)
    with pytest.raises(UsageError, match="go with --stop-running"):
        RunOptions(leave_stopped=True).check()
    with pytest.raises(UsageError, match="--max-stopped-per-group goes with --stop-running"):
        RunOptions(max_stopped_per_group=1).check()
