"""``imagebatch plan``: the pure verdicts, and plan against run on the same fake over HTTP."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance
from batch.forecast import Durations
from batch.models import Job
from batch.plan import JobVerdict, Plan, job_verdict, predict

from .conftest import FakeFactory, write_csv

ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}
FAST = ["--backoff-base", "0.05", "--backoff-cap", "0.2", "--lookup-delay", "0.1", "--rate", "200"]


@pytest.mark.parametrize(
    ("state", "existing", "stop_running", "leave_stopped", "action", "code"),
    [
        pytest.param("STOPPED", None, False, False, "create", None, id="stopped-created"),
        pytest.param(
            "RUNNING", None, False, False, "fail", "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", id="running-plain"
        ),
        pytest.param("RUNNING", None, True, False, "stop, create, start", None, id="running-cycle"),
        pytest.param("RUNNING", None, True, True, "stop, create", None, id="running-leave-stopped"),
        pytest.param("STOPPED", None, True, False, "create", None, id="stopped-never-started"),
        pytest.param("RECYCLE", None, True, False, "fail", "INSTANCE_RECYCLE", id="recycle-stop-running"),
        pytest.param("RECYCLE", None, False, False, "fail", None, id="recycle-plain-code-is-the-apis"),
        pytest.param("CREATE_FAILED", None, True, True, "fail", "INSTANCE_CREATE_FAILED", id="create-failed-stop"),
        pytest.param("CREATE_FAILED", None, False, False, "fail", None, id="create-failed-plain-code-is-the-apis"),
        pytest.param(None, None, True, False, "fail", "INVALID_INSTANCE_NOT_FOUND", id="unknown-instance"),
        pytest.param("STOPPING", None, True, False, "wait, then decide", None, id="transitional"),
        pytest.param("RUNNING", ("img-1", "AVAILABLE"), False, False, "skip", None, id="name-exists-skips-first"),
        pytest.param("STOPPED", ("img-1", "CREATING"), False, False, "skip", None, id="name-creating-skips"),
        pytest.param("STOPPED", ("img-1", "FAILED"), False, False, "create", None, id="failed-image-does-not-skip"),
        pytest.param("STOPPED", ("img-1", "DELETING"), False, False, "create", None, id="deleting-image-does-not-skip"),
    ],
)
def test_job_verdict(
    state: str | None,
    existing: tuple[str, str] | None,
    stop_running: bool,
    leave_stopped: bool,
    action: str,
    code: str | None,
) -> None:
    """Each state, name and flag combination gives the action the run takes."""
    verdict = job_verdict(state, existing, stop_running=stop_running, leave_stopped=leave_stopped)
    assert verdict == JobVerdict(action, code, verdict.reason)
    assert verdict.reason


async def _cli(*argv: str) -> tuple[int, str]:
    """``imagebatch ...`` in its own process; the exit code and stdout."""
    done = await anyio.run_process([sys.executable, "-m", "batch", *argv], env=ENV, check=False)
    return done.returncode, done.stdout.decode()


def _fleet() -> list[FakeInstance]:
    return [
        FakeInstance("i-stopped-1"),
        FakeInstance("i-stopped-2"),
        FakeInstance("i-running-1", status="RUNNING"),
        FakeInstance("i-running-2", status="RUNNING"),
        FakeInstance("i-recycled", status="RECYCLE"),
        FakeInstance("i-named"),  # its image exists already: skipped
    ]


#: what a job's result status is when the plan said this
_EXPECTED_STATUS = {
    "create": "succeeded",
    "stop, create, start": "succeeded",
    "stop, create": "succeeded",
    "skip": "skipped",
    "fail": "failed",
}


@pytest.mark.anyio
@pytest.mark.parametrize("stop_running", [False, True], ids=["plain", "stop-running"])
async def test_plan_agrees_with_the_run(make_fake: FakeFactory, tmp_path: Path, stop_running: bool) -> None:
    """The plan changes nothing, and the run then does to every job what the plan said (status and code)."""
    timing = {"stop_seconds": 0.05, "boot_seconds": 0.05, "image_ready_seconds": 0.05}
    fake = await make_fake(_fleet(), cloud_kwargs=timing)
    ids = [i.instance_id for i in _fleet()] + ["i-unknown"]
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    flags = ["--stop-running", "--max-stopped", "2", "--poll-interval", "0.05"] if stop_running else []
    # an image by i-named's name exists before either of them runs
    await _cli(
        "run",
        str(write_csv(tmp_path / "one.csv", ["i-named"])),
        "--endpoint",
        fake.url,
        "--quiet",
        "--out",
        str(tmp_path / "first"),
        "--name-template",
        "nightly-{instanceId}",
        *FAST,
    )
    before = fake.inspect()
    code, out = await _cli(
        "plan",
        str(jobs),
        "--endpoint",
        fake.url,
        "--output",
        "json",
        "--name-template",
        "nightly-{instanceId}",
        *FAST,
        *flags,
    )
    plan: dict[str, Any] = json.loads(out)
    after = fake.inspect()
    assert after["instanceStates"] == before["instanceStates"]
    assert after.get("images") == before.get("images")
    assert code == 1  # some jobs would fail
    assert plan["exitCode"] == 1
    run_code, _ = await _cli(
        "run",
        str(jobs),
        "--endpoint",
        fake.url,
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        "--name-template",
        "nightly-{instanceId}",
        *FAST,
        *flags,
    )
    results = {
        r["instanceId"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())
    }
    assert run_code == 1
    for row in plan["jobList"]:
        result = results[row["instanceId"]]
        assert result["status"] == _EXPECTED_STATUS[row["action"]], (row, result)
        if row["action"] == "fail" and row["code"] is not None:
            # where the plan names a code, the run ends with that one
            assert result["error"]["code"] == row["code"], (row, result)
    recycled = next(row for row in plan["jobList"] if row["instanceId"] == "i-recycled")
    if stop_running:
        assert recycled["code"] == "INSTANCE_RECYCLE"
    else:
        # a plain run sends CreateImage: the code is the API's, which the plan does not invent
        assert recycled["code"] is None
        assert recycled["reason"] == "CreateImage refuses an instance in RECYCLE"
    planned = {row["instanceId"]: row["action"] for row in plan["jobList"]}
    assert planned["i-named"] == "skip"
    assert planned["i-unknown"] == "fail"
    assert planned["i-running-1"] == ("stop, create, start" if stop_running else "fail")


@pytest.mark.anyio
async def test_plan_exit_codes_for_bad_input(make_fake: FakeFactory, tmp_path: Path) -> None:
    """Refused credentials and a bad job list end a plan with exit 2 and a message, no traceback."""
    fake = await make_fake([FakeInstance("i-1")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    env = {**ENV, "ZENLAYER_ACCESS_KEY_SECRET": "wrong-secret"}
    done = await anyio.run_process(
        [sys.executable, "-m", "batch", "plan", str(jobs), "--endpoint", fake.url], env=env, check=False
    )
    assert done.returncode == 2
    assert b"refused the credentials" in done.stderr
    assert b"Traceback" not in done.stderr
    assert b"wrong-secret" not in done.stderr + done.stdout
    assert fake.inspect()["calls"] == {"DescribeCustomImages": 1}  # refused credentials are not retried
    bad = tmp_path / "bad.csv"
    bad.write_text("instanceId\n\n", encoding="utf-8")
    code, _ = await _cli("plan", str(bad), "--endpoint", fake.url)
    assert code == 2
    code, _ = await _cli("plan", "--endpoint", fake.url)
    assert code == 2


@pytest.mark.anyio
async def test_plan_quota(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--quota below the images the run would hold makes the plan say so and exit 1."""
    fake = await make_fake([FakeInstance(f"i-{n}") for n in range(5)])
    jobs = write_csv(tmp_path / "jobs.csv", [f"i-{n}" for n in range(5)])
    code, out = await _cli("plan", str(jobs), "--endpoint", fake.url, "--quota", "4", *FAST)
    assert code == 1
    assert "OVER the quota" in out
    code, out = await _cli("plan", str(jobs), "--endpoint", fake.url, "--quota", "5", *FAST)
    assert code == 0
    assert "within" in out


@pytest.mark.anyio
async def test_plan_of_ten_thousand_jobs_takes_about_110_calls(make_fake: FakeFactory, tmp_path: Path) -> None:
    """10,000 jobs are planned with one listing page and 100 state look-ups, counted by the fake."""
    ids = [f"i-{n:05d}" for n in range(10_000)]
    fake = await make_fake([FakeInstance(i) for i in ids])
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    code, out = await _cli("plan", str(jobs), "--endpoint", fake.url, "--output", "json", "--rate", "1000")
    plan = json.loads(out)
    assert code == 0
    assert plan["planCalls"] == {"DescribeCustomImages": 1, "DescribeInstancesStatus": 100}
    assert sum(fake.inspect()["calls"].values()) <= 110


@pytest.mark.anyio
async def test_plan_exit_3_when_the_api_cannot_be_asked(tmp_path: Path) -> None:
    """Nothing listening at the endpoint: exit 3 after the run's budget of tries, with a message, no traceback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    done = await anyio.run_process(
        [sys.executable, "-m", "batch", "plan", str(jobs), "--endpoint", f"http://127.0.0.1:{port}", *FAST],
        env=ENV,
        check=False,
    )
    assert done.returncode == 3
    assert b"could not ask the API" in done.stderr
    assert b"after 6 attempts" in done.stderr  # a refused connection is retried as the run retries it
    assert b"Traceback" not in done.stderr


async def _proc(*argv: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> tuple[int, str, str]:
    """``imagebatch ...`` in its own process; the exit code, stdout and stderr."""
    done = await anyio.run_process([sys.executable, "-m", "batch", *argv], env=env or ENV, check=False, input=stdin)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_images_peak_counts_jobs_that_wait_then_decide() -> None:
    """A job in a transitional state sends CreateImage in the prediction, so it counts in the peak and after."""
    rows = []
    for n, state in enumerate(["STOPPING", "STOPPED"]):
        verdict = job_verdict(state, None, stop_running=False, leave_stopped=False)
        rows.append((Job(line=n + 2, instance_id=f"i-{n}", image_name=f"img-{n}"), state, verdict))
    plan = Plan(jobs=rows, images_listed=3, quota=4)
    predicted = predict(plan, rate=10, concurrency=4, max_stopped=1, poll_interval=5, wait=False, durations=Durations())
    assert predicted.calls["CreateImage"] == 2
    assert plan.images_peak() == 3 + 2
    assert plan.images_after() == 3 + 2
    assert plan.over_quota()


@pytest.mark.anyio
async def test_plan_retries_its_reads(make_fake: FakeFactory, tmp_path: Path) -> None:
    """503s, a lost answer, a dropped connection and a 429 on the plan's reads are retried: the plan goes through."""
    scripts = {
        "DescribeCustomImages": {"*": ["503", "lost", "429"]},
        "DescribeInstancesStatus": {"*": ["503", "drop", "429"]},
    }
    fake = await make_fake([FakeInstance("i-1"), FakeInstance("i-2")], scripts=scripts)
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-2"])
    code, out, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--output", "json", *FAST)
    assert code == 0, err
    plan = json.loads(out)
    assert [row["action"] for row in plan["jobList"]] == ["create", "create"]
    assert fake.inspect()["calls"] == {"DescribeCustomImages": 4, "DescribeInstancesStatus": 4}


@pytest.mark.anyio
async def test_plan_retries_under_a_random_error_rate(make_fake: FakeFactory, tmp_path: Path) -> None:
    """With a third of all requests answered 5xx, a plan of 300 jobs still reads every state."""
    ids = [f"i-{n:03d}" for n in range(300)]
    fake = await make_fake([FakeInstance(i) for i in ids], error_rate=0.3, seed=7)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    code, out, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--output", "json", *FAST)
    assert code == 0, err
    assert json.loads(out)["byAction"] == {"create": 300}


@pytest.mark.anyio
async def test_plan_gives_up_after_the_listing_budget(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A listing that keeps failing ends the plan with exit 3 after the run's budget of tries, saying so."""
    fake = await make_fake([FakeInstance("i-1")], scripts={"DescribeCustomImages": {"*": ["503"] * 20}})
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    code, _, err = await _proc("plan", str(jobs), "--endpoint", fake.url, *FAST)
    assert code == 3
    assert "could not ask the API" in err
    assert "after 6 attempts" in err
    assert "Traceback" not in err
    assert fake.inspect()["calls"] == {"DescribeCustomImages": 6}


@pytest.mark.anyio
async def test_plan_refuses_resume_and_a_used_out(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--resume, or an --out that holds a run, ends a plan with exit 2: a plan describes a new run."""
    fake = await make_fake([FakeInstance("i-1")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    code, _, err = await _proc("run", str(jobs), "--endpoint", fake.url, "--quiet", "--out", str(tmp_path / "r"))
    assert code == 0, err
    code, _, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "r"), "--resume")
    assert code == 2
    assert "plan describes a new run" in err
    code, _, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "r"))
    assert code == 2
    assert "plan describes a new run" in err
    assert "already holds a run" in err
    code, _, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "new"), *FAST)
    assert code == 0, err
    assert not (tmp_path / "new").exists()
    assert sum(fake.inspect()["calls"].get(a, 0) for a in ("CreateImage", "StopInstances")) == 1


@pytest.mark.anyio
async def test_plan_refuses_standard_input(tmp_path: Path) -> None:
    """A job list on standard input ends a plan with exit 2 and a message that says to give a file."""
    code, _, err = await _proc("plan", "-", "--endpoint", "http://127.0.0.1:9", stdin=b"instanceId\ni-1\n")
    assert code == 2
    assert "standard input is not supported" in err


@pytest.mark.anyio
async def test_plan_reads_config_and_profile(make_fake: FakeFactory, tmp_path: Path) -> None:
    """--config FILE --profile NAME set a plan's flags as they set a run's; the run's own keys are accepted."""
    fake = await make_fake([FakeInstance("i-1", status="RUNNING")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    config = tmp_path / "imagebatch.toml"
    metrics = tmp_path / "m.prom"
    text = f'rate = 200\nmetrics-file = "{metrics.as_posix()}"\njob-name = "n"\n\n[nightly]\nstop-running = true\n'
    config.write_text(text, encoding="utf-8")
    base = ("plan", str(jobs), "--endpoint", fake.url, "--output", "json", "--config", str(config))
    code, out, err = await _proc(*base, "--profile", "nightly")
    assert code == 0, err
    assert json.loads(out)["jobList"][0]["action"] == "stop, create, start"
    assert not metrics.exists()
    code, out, err = await _proc(*base)
    assert code == 1, err
    assert json.loads(out)["jobList"][0]["action"] == "fail"
    code, _, err = await _proc("plan", str(jobs), "--endpoint", fake.url, "--profile", "nightly")
    assert code == 2
    assert "needs --config" in err
    config.write_text("no-such-flag = 1\n", encoding="utf-8")
    code, _, err = await _proc(*base)
    assert code == 2
    assert "no-such-flag" in err
    assert "Traceback" not in err


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        pytest.param(["--halt", "fail=1"], "--halt", id="halt"),
        pytest.param(["--canary", "1"], "--canary", id="canary"),
    ],
)
async def test_plan_says_it_does_not_simulate_halting(
    make_fake: FakeFactory, tmp_path: Path, flags: list[str], named: str
) -> None:
    """With --halt or --canary the plan says it predicts every job as if the run did not halt."""
    fake = await make_fake([FakeInstance("i-1", status="RUNNING"), FakeInstance("i-2")])
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-2"])
    code, out, _ = await _proc("plan", str(jobs), "--endpoint", fake.url, *FAST, *flags)
    assert code == 1
    assert f"note: the plan does not simulate {named}" in out
    code, out, _ = await _proc("plan", str(jobs), "--endpoint", fake.url, "--output", "json", *FAST, *flags)
    assert any(f"does not simulate {named}" in note for note in json.loads(out)["notes"])
    code, out, _ = await _proc("plan", str(jobs), "--endpoint", fake.url, *FAST)
    assert "does not simulate" not in out


@pytest.mark.anyio
async def test_plan_cannot_know_gpu_instances_or_the_quota(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A GPU instance and a full quota show only in CreateImage's answer: the plan says create, the run then fails."""
    gpu = await make_fake([FakeInstance("i-gpu", gpu=True)])
    jobs = write_csv(tmp_path / "gpu.csv", ["i-gpu"])
    code, out, err = await _proc("plan", str(jobs), "--endpoint", gpu.url, "--output", "json", *FAST)
    assert code == 0, err
    assert json.loads(out)["jobList"][0]["action"] == "create"
    code, _, _ = await _proc("run", str(jobs), "--endpoint", gpu.url, "--quiet", "--out", str(tmp_path / "g"), *FAST)
    assert code == 1
    result = json.loads((tmp_path / "g" / "results.jsonl").read_text().splitlines()[0])
    assert result["error"]["code"] == "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT"
    full = await make_fake([FakeInstance("i-1")], cloud_kwargs={"image_quota": 0})
    jobs = write_csv(tmp_path / "full.csv", ["i-1"])
    code, out, err = await _proc("plan", str(jobs), "--endpoint", full.url, *FAST)
    assert code == 0, err
    code, _, _ = await _proc("run", str(jobs), "--endpoint", full.url, "--quiet", "--out", str(tmp_path / "q"), *FAST)
    assert code == 3
    result = json.loads((tmp_path / "q" / "results.jsonl").read_text().splitlines()[0])
    assert result["error"]["code"] == "INVALID_IMAGE_QUOTA_EXCEED"
