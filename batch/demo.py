"""``imagebatch demo``: the sample job list against an in-process fake API.

The fake serves the sample fleet (``jobs/demo-fleet.csv``: a few GPU, busy, missing and
running instances) with a rate limit, some 503s and some lost responses, and the real run
code images it. The demo then asks the fake whether any instance got two images.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from .credentials import Credentials
from .fake import FakeCloud, FakeConfig, FakeZenlayer
from .fake.fleet import fleet_from_job_list
from .report import ProgressPrinter, render_summary
from .runner import Run, RunOptions

__all__ = ["demo_fleet_path", "run_demo"]


def demo_fleet_path() -> Path:
    """The sample fleet: packaged with the wheel, or the repository's ``jobs/`` folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / "demo-fleet.csv", here.parent / "jobs" / "demo-fleet.csv"):
        if candidate.exists():
            return candidate
    msg = "the demo fleet (jobs/demo-fleet.csv) is not installed"
    raise FileNotFoundError(msg)


async def run_demo(out: Path | None = None, quiet: bool = False) -> int:
    """Run the demo; 0 when every job was accounted for and no image was duplicated."""
    fleet = demo_fleet_path()
    instances = fleet_from_job_list(fleet)
    cloud = FakeCloud(instances, image_ready_seconds=1.0)
    config = FakeConfig(
        rate_limit=25,
        error_rate=0.05,
        seed=7,
        # Two instances whose first CreateImage commits and then loses its answer.
        scripts={"1660545330971000004": ["lost"], "1660545330971000017": ["lost", "ok"]},
    )
    out = out or Path("runs") / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    async with FakeZenlayer(cloud, config) as fake:
        print(f"fake Zenlayer API at {fake.url} serving {len(cloud.instances)} instances from {fleet.name}")
        credentials = Credentials(config.access_key_id, config.access_key_secret)
        options = RunOptions(concurrency=8, rate=20, backoff_base=0.5, backoff_cap=4, busy_timeout=60, seed=1)
        run = Run(
            fleet,
            out,
            options,
            credentials=credentials,
            endpoint=fake.url,
            progress=None if quiet else ProgressPrinter(),
            handle_signals=True,
        )
        outcome = await run.execute()
        seen = fake.inspect()
    print(render_summary(outcome.summary, out_dir=outcome.out_dir, resumable=False))
    duplicates = seen["duplicateInstances"]
    print(f"fake API: {seen['images']} images, {seen['lostResponses']} lost responses, duplicates: {len(duplicates)}")
    accounted = outcome.summary.get("ended") == outcome.summary.get("jobs")
    if duplicates or not accounted:
        print("demo FAILED: duplicate images or jobs not accounted for", file=sys.stderr)
        return 1
    print(
        "demo OK: every job accounted for once, no duplicate image "
        "(failed jobs above are the fleet's GPU, missing and running instances)"
    )
    return 0
