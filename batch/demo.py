"""``imagebatch demo``: the sample job list against an in-process fake API.

The fake serves the sample fleet (``jobs/demo-fleet.csv``: a few GPU, busy and missing
instances, and ten RUNNING ones in two groups) with a rate limit, some 503s and some lost
responses, and the real run code images it: the RUNNING instances go through the golden-image
cycle (stop, image, start again; at most 3 down at once, 1 per group). Before the run the demo
says which instances must fail and why (read from the fleet's fake-only columns); after it, it
checks that exactly those failed, each with its expected code, that every other job succeeded,
that every RUNNING instance is RUNNING again, and that no instance got two images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .credentials import Credentials
from .errors import UsageError
from .fake import FakeCloud, FakeConfig, FakeZenlayer
from .fake.fleet import fleet_from_job_list
from .fake.state import BUSY_STATES
from .journal import JOURNAL_FILE, RunDirectory, read_journal
from .models import Job
from .options import RunOptions
from .report import ProgressPrinter, render_summary
from .run import Run
from .sources import JobList
from .summary import EXIT_SIGINT, EXIT_SIGTERM

__all__ = ["ExpectedFailure", "check_outcome", "demo_fleet_path", "expected_failure", "run_demo"]

#: the demo run's knobs: busy instances get a minute before they count as failed; RUNNING ones
#: are stopped, imaged and started again, at most 3 down at once and 1 per group
DEMO_OPTIONS = RunOptions(
    concurrency=8,
    rate=20,
    backoff_base=0.5,
    backoff_cap=4,
    busy_timeout=60,
    seed=1,
    stop_running=True,
    max_stopped="3",
    max_stopped_per_group=1,
    poll_interval=0.5,
    lookup_delay=2.0,
)
#: values of the fake's yes/no columns that mean yes (as ``fleet_from_job_list`` reads them)
_TRUE = frozenset({"1", "true", "yes", "y"})


@dataclass(frozen=True, slots=True)
class ExpectedFailure:
    """A job of the sample fleet that must fail, and the error code it must fail with.

    Args:
        code: the API error code the job must end with.
        why: what about the instance makes it fail, for people.
    """

    code: str
    why: str


def demo_fleet_path() -> Path:
    """The sample fleet: packaged with the wheel, or the repository's ``jobs/`` folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / "demo-fleet.csv", here.parent / "jobs" / "demo-fleet.csv"):
        if candidate.exists():
            return candidate
    msg = "the demo fleet (jobs/demo-fleet.csv) is not installed; reinstall imagebatch"
    raise UsageError(msg)


def expected_failure(fake: Mapping[str, str], *, busy_timeout: float) -> ExpectedFailure | None:
    """How a job whose row has these fake-only columns must end: ``None`` if it must succeed.

    The checks run in the order the fake applies them to CreateImage.

    Args:
        fake: the row's fake-only columns (``fakeStatus``, ``fakeGpu``, ``fakeBusySeconds``).
        busy_timeout: the run's ``--busy-timeout``: an instance busy longer than this fails.
    """
    status = fake.get("fakeStatus", "STOPPED").upper()
    if status == "MISSING":
        return ExpectedFailure("INVALID_INSTANCE_NOT_FOUND", "missing: the fake has no such instance")
    if fake.get("fakeGpu", "").lower() in _TRUE:
        return ExpectedFailure("OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT", "GPU instance")
    if status in BUSY_STATES:
        # The fake never moves an instance out of a busy state it started in.
        return ExpectedFailure("OPERATION_DENIED_INSTANCE_IN_OPERATION", f"{status} for good")
    busy = float(fake.get("fakeBusySeconds") or 0)
    if busy > busy_timeout:
        return ExpectedFailure(
            "OPERATION_DENIED_INSTANCE_IN_OPERATION", f"busy {busy:g} s, past --busy-timeout {busy_timeout:g} s"
        )
    if status not in {"STOPPED", "RUNNING"}:  # RUNNING ones are stopped, imaged, started again
        return ExpectedFailure("OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", f"{status}, not STOPPED")
    return None


def check_outcome(
    jobs: Iterable[Job],
    expected: Mapping[str, ExpectedFailure],
    results: Mapping[str, Mapping[str, Any]],
    duplicates: Iterable[str],
) -> list[str]:
    """What differs between the run and what the fleet says must happen (empty: all as expected).

    Args:
        jobs: the fleet's jobs.
        expected: instance id -> how it must fail, for the jobs that must fail.
        results: instance id -> its result record (``status``, ``error``).
        duplicates: instance ids the fake made more than one image of.
    """
    problems = []
    for job in jobs:
        result = results.get(job.instance_id)
        if result is None:
            problems.append(f"{job.instance_id}: did not end")
            continue
        status = result.get("status")
        code = (result.get("error") or {}).get("code")
        got = f"{status}" + (f" ({code})" if code else "")
        must = expected.get(job.instance_id)
        if must is not None and (status != "failed" or code != must.code):
            problems.append(f"{job.instance_id}: must fail with {must.code} ({must.why}), but {got}")
        elif must is None and status != "succeeded":
            problems.append(f"{job.instance_id}: must succeed, but {got}")
    problems += [f"{instance_id}: got more than one image" for instance_id in duplicates]
    return problems


async def run_demo(out: Path | None = None, quiet: bool = False, *, fleet: Path | None = None) -> int:
    """Run the demo; 0 only when the run did what the fleet says it must.

    Args:
        out: the run directory (default ``runs/demo-<UTC timestamp>``); it must not hold a run.
        quiet: no progress display.
        fleet: the job list to serve and image (default: the sample fleet).
    """
    fleet = fleet or demo_fleet_path()
    out = out or Path("runs") / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if RunDirectory(out).exists:
        # The demo starts its fake afresh, so an earlier demo's run cannot be resumed.
        msg = f"{out} already holds a run; choose another --out or delete it"
        raise UsageError(msg)
    instances = fleet_from_job_list(fleet)
    jobs = list(JobList(fleet))
    expected = {
        job.instance_id: failure
        for job in jobs
        if (failure := expected_failure(job.fake, busy_timeout=DEMO_OPTIONS.busy_timeout)) is not None
    }
    cloud = FakeCloud(instances, image_ready_seconds=1.0, stop_seconds=1.0, boot_seconds=1.0)
    config = FakeConfig(
        rate_limit=25,
        error_rate=0.05,
        seed=7,
        # Two instances whose first CreateImage commits and then loses its answer.
        scripts={"1660545330971000004": ["lost"], "1660545330971000017": ["lost", "ok"]},
    )
    printer = None if quiet else ProgressPrinter()
    async with FakeZenlayer(cloud, config) as fake:
        print(f"fake Zenlayer API at {fake.url} serving {len(cloud.instances)} instances from {fleet.name}")
        must_succeed = len(jobs) - len(expected)
        print(f"the fleet has {len(expected)} instances that must fail; the other {must_succeed} must succeed:")
        for job in jobs:
            if (failure := expected.get(job.instance_id)) is not None:
                print(f"  {job.instance_id} (line {job.line}): {failure.why} -> {failure.code}")
        credentials = Credentials(config.access_key_id, config.access_key_secret)
        run = Run(
            fleet, out, DEMO_OPTIONS, credentials=credentials, endpoint=fake.url, progress=printer, handle_signals=True
        )
        outcome = await run.execute()
        seen = fake.inspect()
    if printer is not None:
        printer.finish()
    print(render_summary(outcome.summary, out_dir=outcome.out_dir, resumable=False))
    duplicates = seen["duplicateInstances"]
    print(f"fake API: {seen['images']} images, {seen['lostResponses']} lost responses, duplicates: {len(duplicates)}")
    if outcome.exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
        print(f"demo stopped by {outcome.summary.get('stoppedBy')} before it could check the outcome")
        return outcome.exit_code
    results = read_journal(RunDirectory(outcome.out_dir).file(JOURNAL_FILE)).results
    problems = check_outcome(jobs, expected, results, duplicates)
    problems += [f"{i}: was RUNNING, and is not RUNNING again after the run" for i in seen["notRunningAnymore"]]
    if problems:
        print(f"demo FAILED: {len(problems)} job(s) did not end as the fleet says they must:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(
        f"demo OK: the {len(expected)} instances that must fail failed with their expected codes, "
        f"the other {must_succeed} succeeded, every RUNNING instance is RUNNING again, "
        "and no instance got two images "
        f"(so the run's exit code {outcome.exit_code} is the expected one)"
    )
    return 0
