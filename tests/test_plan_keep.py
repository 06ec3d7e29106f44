"""plan with --keep: the images retention would delete are the ones the run then deletes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance

from .conftest import FakeFactory, write_csv

pytestmark = pytest.mark.anyio

ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}
FAST = [
    "--backoff-base",
    "0.05",
    "--backoff-cap",
    "0.2",
    "--lookup-delay",
    "0.1",
    "--rate",
    "200",
    "--poll-interval",
    "0.05",
]


async def _cli(*argv: str) -> tuple[int, str, str]:
    done = await anyio.run_process([sys.executable, "-m", "batch", *argv], env=ENV, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_plan_names_the_deletions_the_run_makes(make_fake: FakeFactory, tmp_path: Path) -> None:
    """After two nights, a plan with --keep 2 lists each instance's oldest image; the run deletes exactly those."""
    ids = ["i-1", "i-2", "i-3"]
    fake = await make_fake([FakeInstance(i) for i in ids], cloud_kwargs={"image_ready_seconds": 0.05})
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    for night in ("n1", "n2"):
        code, _, err = await _cli(
            "run",
            str(jobs),
            "--endpoint",
            fake.url,
            "--out",
            str(tmp_path / night),
            "--quiet",
            "--wait",
            "--name-template",
            f"{{instanceId}}-{night}",
            *FAST,
        )
        assert code == 0, err
    flags = ["--keep", "2", "--name-template", "{instanceId}-n3", *FAST]
    code, out, err = await _cli("plan", str(jobs), "--endpoint", fake.url, "--output", "json", *flags)
    assert code == 0, err
    plan = json.loads(out)
    planned = {(d["instanceId"], d["imageName"]) for d in plan["deletions"]}
    assert planned == {(i, f"{i}-n1") for i in ids}
    assert plan["predicted"]["calls"]["DeleteImages"] == 1
    code, _, err = await _cli(
        "run", str(jobs), "--endpoint", fake.url, "--out", str(tmp_path / "n3"), "--quiet", *flags
    )
    assert code == 0, err
    results = [json.loads(line) for line in (tmp_path / "n3" / "results.jsonl").read_text().splitlines()]
    pruned = {(r["instanceId"], image_id) for r in results for image_id in r.get("prunedImageIds") or []}
    assert pruned == {(d["instanceId"], d["imageId"]) for d in plan["deletions"]}


async def test_plan_retries_the_policy_listing(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A 503 and a lost answer on the policy's listing are retried, as the run retries it: the plan goes through."""
    # the first listing (every image) answers; the policy's listing fails twice, then answers
    scripts = {"DescribeCustomImages": {"*": ["ok", "503", "lost"]}}
    fake = await make_fake([FakeInstance("i-1")], scripts=scripts)
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    code, out, err = await _cli("plan", str(jobs), "--endpoint", fake.url, "--output", "json", "--keep", "2", *FAST)
    assert code == 0, err
    assert json.loads(out)["deletions"] == []
    assert fake.inspect()["calls"]["DescribeCustomImages"] == 4
