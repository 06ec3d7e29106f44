"""``imagebatch demo``: says up front what must fail, checks the run against it, refuses a used --out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.cli import main
from batch.demo import ExpectedFailure, check_outcome, expected_failure, run_demo
from batch.models import Job

ROOT = Path(__file__).parent.parent
GPU = "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT"
NOT_FOUND = "INVALID_INSTANCE_NOT_FOUND"
IN_OPERATION = "OPERATION_DENIED_INSTANCE_IN_OPERATION"
STATUS = "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT"


@pytest.mark.parametrize(
    ("fake", "code"),
    [
        pytest.param({}, None, id="plain-stopped-succeeds"),
        pytest.param({"fakeGpu": "true"}, GPU, id="gpu"),
        pytest.param({"fakeGpu": "Yes"}, GPU, id="gpu-yes"),
        pytest.param({"fakeGpu": "no"}, None, id="gpu-no"),
        pytest.param({"fakeStatus": "MISSING"}, NOT_FOUND, id="missing"),
        pytest.param({"fakeStatus": "missing", "fakeGpu": "1"}, NOT_FOUND, id="missing-before-gpu"),
        pytest.param({"fakeStatus": "RUNNING"}, None, id="running-goes-through-the-cycle"),
        pytest.param({"fakeStatus": "REBOOT"}, STATUS, id="other-state"),
        pytest.param({"fakeStatus": "RUNNING", "fakeGpu": "y"}, GPU, id="gpu-before-status"),
        pytest.param({"fakeBusySeconds": "6"}, None, id="busy-within-timeout-succeeds"),
        pytest.param({"fakeBusySeconds": "61"}, IN_OPERATION, id="busy-past-timeout"),
        pytest.param({"fakeStatus": "IMAGING"}, IN_OPERATION, id="busy-state-for-good"),
        pytest.param({"fakeStatus": "RUNNING", "fakeBusySeconds": "100"}, IN_OPERATION, id="busy-before-status"),
        pytest.param({"fakeImageFails": "true"}, None, id="image-fails-unseen-without-wait"),
    ],
)
def test_expected_failure(fake: dict[str, str], code: str | None) -> None:
    """The fake-only columns say which code a job must fail with, in the order the fake checks them."""
    failure = expected_failure(fake, busy_timeout=60)
    assert (failure.code if failure else None) == code
    if failure:
        assert failure.why


JOBS = [Job(line=n + 1, instance_id=str(n), image_name=f"img-{n}") for n in range(1, 4)]
EXPECTED = {"2": ExpectedFailure(GPU, "GPU instance")}


def _ok() -> dict[str, Any]:
    return {"status": "succeeded", "error": None}


def _failed(code: str) -> dict[str, Any]:
    return {"status": "failed", "error": {"code": code}}


@pytest.mark.parametrize(
    ("results", "duplicates", "problems"),
    [
        pytest.param({"1": _ok(), "2": _failed(GPU), "3": _ok()}, [], [], id="as-expected"),
        pytest.param(
            {"1": _ok(), "2": _ok(), "3": _ok()},
            [],
            [f"2: must fail with {GPU} (GPU instance), but succeeded"],
            id="expected-failure-succeeded",
        ),
        pytest.param(
            {"1": _ok(), "2": _failed(NOT_FOUND), "3": _ok()},
            [],
            [f"2: must fail with {GPU} (GPU instance), but failed ({NOT_FOUND})"],
            id="wrong-code",
        ),
        pytest.param(
            {"1": _ok(), "2": _failed(GPU), "3": _failed("REQUEST_TIMED_OUT")},
            [],
            ["3: must succeed, but failed (REQUEST_TIMED_OUT)"],
            id="unexpected-failure",
        ),
        pytest.param(
            {"1": {"status": "skipped"}, "2": _failed(GPU), "3": _ok()},
            [],
            ["1: must succeed, but skipped"],
            id="skipped-is-not-success",
        ),
        pytest.param({"2": _failed(GPU), "3": _ok()}, [], ["1: did not end"], id="not-ended"),
        pytest.param(
            {"1": _ok(), "2": _failed(GPU), "3": _ok()}, ["3"], ["3: got more than one image"], id="duplicate"
        ),
    ],
)
def test_check_outcome(results: dict[str, Any], duplicates: list[str], problems: list[str]) -> None:
    """Every difference between the run and the fleet's expectations is named; none means OK."""
    assert check_outcome(JOBS, EXPECTED, results, duplicates) == problems


def test_demo_refuses_a_directory_that_holds_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A used --out: exit 2 with a message that fits the demo (it has no --resume), nothing started."""
    out = tmp_path / "used"
    out.mkdir()
    (out / "run.json").write_text("{}")
    assert main(["demo", "--quiet", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"{out} already holds a run; choose another --out or delete it" in captured.err
    assert "pass --resume" not in captured.err
    assert "fake Zenlayer API at" not in captured.out


def test_demo_on_a_small_fleet_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fleet with a GPU and a missing instance: both announced first, both fail as said, the rest succeed: exit 0."""
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(
        "instanceId,fakeGpu,fakeStatus\n1660545330971000101,,\n1660545330971000102,true,\n1660545330971000103,,MISSING\n"
    )
    code = anyio.run(lambda: run_demo(tmp_path / "out", True, fleet=fleet))
    out = capsys.readouterr().out
    assert code == 0, out
    before, after = out.split("\nrun ", 1)
    assert "the fleet has 2 instances that must fail; the other 1 must succeed" in before
    assert f"1660545330971000102 (line 3): GPU instance -> {GPU}" in before
    assert "1660545330971000103 (line 4): missing" in before
    assert "exit code: 1" in after
    assert "--resume" not in after, "a demo run is not resumable"
    assert after.rstrip().splitlines()[-1].startswith("demo OK: the 2 instances that must fail failed")


def test_demo_command() -> None:
    """`imagebatch demo` on the sample fleet: says what must fail, then that it did, exit 0, no duplicate image."""
    out = ROOT / "runs-test-demo"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "demo", "--quiet", "--out", out.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert any(line.startswith("the fleet has 4 instances that must fail") for line in lines)
        assert any(line.strip().startswith("power      stopped 10, started 10") for line in lines), proc.stdout
        assert "duplicates: 0" in proc.stdout
        assert lines[-1].startswith("demo OK:")
        assert "exit code: 1" in proc.stdout  # the must-fail instances give the run exit 1
    finally:
        shutil.rmtree(out, ignore_errors=True)
