"""run --keep killed with SIGKILL while it prunes, then resumed: no image deleted twice, none kept beyond N."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from batch.fake.images import seed_image
from batch.ownership import ownership_tags

from .conftest import FakeFactory, instances, write_csv

pytestmark = pytest.mark.anyio

ENV = {"ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID, "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET}


@pytest.mark.timeout(300)
async def test_kill_9_during_pruning_then_resume(tmp_path: Path, make_fake: FakeFactory) -> None:
    """run --keep 2 killed with SIGKILL at several points of its pruning, then resumed to the end: every
    DeleteImages names an image once, each instance keeps exactly 2 images, one result line per job."""
    ids = [f"i-{n:03d}" for n in range(200)]
    fake = await make_fake(
        instances(*ids), latency=0.01, cloud_kwargs={"image_ready_seconds": 0.2, "transition_seconds": 0.5}
    )
    now = datetime.now(UTC)
    for instance in ids:
        for age in range(1, 7):  # six older images each, made on earlier days
            tags = ownership_tags("nightly", instance, now - timedelta(days=age), f"r{age}")
            seed_image(fake.cloud, instance, f"{instance}-old-{age}", tags=tags)
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "batch", "run", str(jobs), "--policy", "nightly", "--keep", "2", "--out", str(out)]
    argv += ["--resume", "--endpoint", fake.url, "--rate", "60", "--poll-interval", "0.2", "--quiet"]
    argv += ["--backoff-base", "0.01", "--backoff-cap", "0.1", "--lookup-delay", "0.1", "--seed", "3"]
    env = {**os.environ, **ENV}
    kills = 0
    for wanted in (1, 3, 5, 8):
        async with await anyio.open_process(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        ) as proc:
            while proc.returncode is None:
                journal = out / "journal.log"
                records = journal.read_bytes().count(b'"type":"delete"') if journal.exists() else 0
                if records >= wanted:
                    proc.kill()
                    kills += 1
                    break
                await anyio.sleep(0.005)
            await proc.wait()
    assert kills >= 3, "the run finished before it could be killed often enough"
    final = await anyio.run_process(argv, env=env, check=False)
    assert final.returncode == 0, final.stderr.decode()
    started = time.monotonic()
    while any(i.status == "DELETING" for i in fake.cloud.images.values()) and time.monotonic() - started < 10:
        await anyio.sleep(0.1)
        fake.cloud.advance()
    assert max(fake.cloud.delete_requests.values()) == 1, "an image was named in two DeleteImages calls"
    assert fake.cloud.images_per_instance() == dict.fromkeys(ids, 2)
    assert fake.cloud.created_per_instance == dict.fromkeys(ids, 1)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["instanceId"] for r in lines) == ids
    assert all(r["status"] == "succeeded" for r in lines)
    assert sum(len(r["prunedImageIds"]) for r in lines) == 200 * 5
    for record in lines:  # what each line says it kept is what the cloud holds
        held = {i for i, img in fake.cloud.images.items() if img.instance_id == record["instanceId"]}
        assert set(record["keptImageIds"]) == held
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == {"deleted": 1000, "kept": 400, "failedToDelete": 0}
    assert len(summary["segments"]) == kills + 1
