"""imagebatch prune over HTTP against the fake: the rules, dry run, batching, failures, crash safety, seven nights."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch.cli import main
from batch.client import ZecClient
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeImage, FakeZenlayer
from batch.fake.images import seed_image
from batch.journal import read_journal
from batch.ownership import format_created, ownership_tags
from batch.prune import Pruner, PruneSettings
from batch.prunerun import PruneRequest, run_prune
from batch.snapshot import JobSource

from .conftest import CREDS, FakeFactory, instances, write_csv

pytestmark = pytest.mark.anyio

POLICY = "nightly"
NIGHT0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
ENV = {"ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID, "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET}


class Clock:
    """A server clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def night(n: int) -> datetime:
    """The moment of night n's run."""
    return NIGHT0 + timedelta(days=n)


def seed_nights(fake: FakeZenlayer, instance: str, nights: range, *, policy: str = POLICY) -> list[FakeImage]:
    """One AVAILABLE image of the policy per night, tagged as imagebatch tags its images."""
    return [
        seed_image(
            fake.cloud,
            instance,
            f"{instance}-{n}",
            tags=ownership_tags(policy, instance, night(n), f"run-{n}"),
        )
        for n in nights
    ]


def request(
    tmp_path: Path,
    fake: FakeZenlayer,
    ids: list[str] | None,
    *,
    now: datetime,
    out: str = "out",
    dry_run: bool = False,
    resume: bool = False,
    **settings: Any,
) -> PruneRequest:
    """A prune of the job list ``ids`` (None: no job list) against the fake, fast back-off."""
    values: dict[str, Any] = {"policy": POLICY, "keep": 3, "rate": 1000.0, "backoff_base": 0.001, "backoff_cap": 0.01}
    values.update(settings)
    source = None
    if ids is not None:
        source = JobSource.from_argument(str(write_csv(tmp_path / "jobs.csv", ids)))
    return PruneRequest(
        source=source,
        fmt=None,
        out_dir=None if dry_run else tmp_path / out,
        settings=PruneSettings(**values),
        explicit=frozenset(values),
        resume=resume,
        dry_run=dry_run,
        credentials=CREDS,
        endpoint=fake.url,
        now=now,
    )


async def prune(req: PruneRequest) -> tuple[int, str]:
    """Run a prune in this process; its exit code and what it printed."""
    out = io.StringIO()
    code = await run_prune(req, out=out)
    return code, out.getvalue()


def live(fake: FakeZenlayer) -> dict[str, FakeImage]:
    """Images not deleted (DELETING ones are on their way out)."""
    fake.cloud.advance()
    return {i: img for i, img in fake.cloud.images.items() if img.status != "DELETING"}


def results_of(out: Path) -> list[dict[str, Any]]:
    """results.jsonl's lines."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


async def test_prune_keeps_the_newest_n_per_instance(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Five nights of two instances with --keep 3: each keeps its three newest; results and summary say so."""
    fake = await make_fake()
    a = seed_nights(fake, "i-1", range(5))
    b = seed_nights(fake, "i-2", range(5))
    code, printed = await prune(request(tmp_path, fake, ["i-1", "i-2"], now=night(5)))
    assert code == 0
    assert set(live(fake)) == {i.image_id for i in a[2:] + b[2:]}
    lines = results_of(tmp_path / "out")
    assert [r["instanceId"] for r in lines] == ["i-1", "i-2"]
    first = lines[0]
    assert first["status"] == "succeeded"
    assert sorted(first["prunedImageIds"]) == sorted(i.image_id for i in a[:2])
    assert sorted(first["keptImageIds"]) == sorted(i.image_id for i in a[2:])
    assert first["why"][a[0].image_id] == "beyond the newest 3 AVAILABLE"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == {"deleted": 4, "kept": 6, "failedToDelete": 0}
    assert summary["command"] == "prune"
    assert summary["exitCode"] == 0
    assert "deleted 4 image(s), kept 6, failed to delete 0" in printed


async def test_foreign_images_survive(tmp_path: Path, make_fake: FakeFactory) -> None:
    """No tags, another policy, another instance, a manual image named like the template: none is deleted."""
    fake = await make_fake()
    ours = seed_nights(fake, "i-1", range(4))
    foreign = [
        seed_image(fake.cloud, "i-1", "untagged-old"),
        *seed_nights(fake, "i-1", range(4), policy="weekly"),
        *seed_nights(fake, "i-9", range(4)),  # the policy's, but i-9 is not in the job list
        seed_image(fake.cloud, "i-1", "i-1-0", tags=[("owner", "alice")]),  # look-alike name
        seed_image(fake.cloud, "i-1", "i-1-1", tags=[("imagebatch-created", format_created(night(-30)))]),
    ]
    req = request(tmp_path, fake, ["i-1"], now=night(60), keep=1, max_age_days=1.0, prune_failed=True)
    code, printed = await prune(req)
    assert code == 0
    left = live(fake)
    assert all(i.image_id in left for i in foreign)
    assert [i.image_id for i in ours if i.image_id in left] == [ours[-1].image_id]
    assert "1 instance(s) not in the job list left alone (4 image(s)); --orphans prunes them" in printed


async def test_in_progress_and_failed_images_survive(tmp_path: Path, make_fake: FakeFactory) -> None:
    """PROCESSING, SYNCING and CREATING images stay; FAILED ones stay unless --prune-failed."""
    fake = await make_fake()
    seed_nights(fake, "i-1", range(3))
    tags = lambda n: ownership_tags(POLICY, "i-1", night(n), "r")  # noqa: E731 - a table's shorthand
    busy = [seed_image(fake.cloud, "i-1", f"b{s}", status=s, tags=tags(-5)) for s in ("PROCESSING", "SYNCING")]
    failed = seed_image(fake.cloud, "i-1", "f", status="FAILED", tags=tags(-6))
    await prune(request(tmp_path, fake, ["i-1"], now=night(3), keep=1))
    assert {b.image_id for b in busy} | {failed.image_id} <= set(live(fake))
    await prune(request(tmp_path, fake, ["i-1"], now=night(3), keep=1, prune_failed=True, out="again"))
    assert failed.image_id not in live(fake)
    assert {b.image_id for b in busy} <= set(live(fake))


async def test_dry_run_deletes_nothing_and_prints_what_prune_then_deletes(
    tmp_path: Path, make_fake: FakeFactory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prune --dry-run sends no DeleteImages and writes no directory; its table names exactly what prune deletes."""
    fake = await make_fake()
    for n in range(3):
        seed_nights(fake, f"i-{n}", range(2 + n))
    jobs = write_csv(tmp_path / "jobs.csv", ["i-0", "i-1", "i-2"])
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    argv = ["prune", str(jobs), "--policy", POLICY, "--keep", "2", "--endpoint", fake.url, "--rate", "1000"]
    monkeypatch.chdir(tmp_path)
    assert await anyio.to_thread.run_sync(main, [*argv, "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert fake.calls["DeleteImages"] == 0
    assert not (tmp_path / "runs").exists()
    before = set(live(fake))
    assert "dry run: nothing was deleted; 3 image(s) would be deleted" in planned
    assert planned.splitlines()[0].split() == ["instance", "kept", "deleted", "why"]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    done = capsys.readouterr().out
    (made,) = (tmp_path / "runs").glob("prune-*")  # the default run directory
    assert len(results_of(made)) == 3
    deleted = before - set(live(fake))
    assert len(deleted) == 3
    table = planned.split("dry run:")[0]
    assert {word for word in table.split() if word.startswith("img-")} == deleted
    assert done.startswith(table.rstrip("\n"))


async def test_one_listing_and_deletions_in_calls_of_100(tmp_path: Path, make_fake: FakeFactory) -> None:
    """2,500 images: the policy is listed in three pages of 1,000 and 1,750 ids go in 18 DeleteImages calls."""
    fake = await make_fake()
    ids = [f"i-{n:03d}" for n in range(500)]
    for instance in ids:
        seed_nights(fake, instance, range(5))
    code, _ = await prune(request(tmp_path, fake, ids, now=night(5), keep=1, rate=10000.0))
    assert code == 0
    assert fake.calls["DescribeCustomImages"] == 3
    assert fake.calls["DeleteImages"] == math.ceil(2000 / 100)
    assert fake.cloud.largest_delete_call == 100
    assert len(live(fake)) == 500


async def test_failed_ids_are_retried_then_recorded(tmp_path: Path, make_fake: FakeFactory) -> None:
    """An id failing twice is deleted on its third try; one that always fails is recorded with exit 1."""
    fake = await make_fake(scripts={"DeleteImages": {"img-00000001": ["fail", "fail"], "img-00000002": ["fail"] * 9}})
    images = seed_nights(fake, "i-1", range(4))
    assert [i.image_id for i in images[:2]] == ["img-00000001", "img-00000002"]
    code, _ = await prune(request(tmp_path, fake, ["i-1"], now=night(4), keep=2, max_attempts=3))
    assert code == 1
    (line,) = results_of(tmp_path / "out")
    assert line["status"] == "failed"
    assert line["prunedImageIds"] == ["img-00000001"]
    assert line["failedImageIds"] == ["img-00000002"]
    assert line["error"]["code"] == "DELETE_FAILED"
    assert "AVAILABLE" in line["error"]["message"]
    assert fake.cloud.delete_requests["img-00000001"] == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"]["failedToDelete"] == 1
    assert summary["exitCode"] == 1


async def test_lost_answer_is_looked_up_not_resent(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A DeleteImages whose answer is lost finds its images DELETING and counts them deleted without resending."""
    fake = await make_fake(scripts={"DeleteImages": {"*": ["lost"]}}, cloud_kwargs={"transition_seconds": 60.0})
    images = seed_nights(fake, "i-1", range(3))
    code, _ = await prune(request(tmp_path, fake, ["i-1"], now=night(3), keep=1))
    assert code == 0
    (line,) = results_of(tmp_path / "out")
    assert sorted(line["prunedImageIds"]) == sorted(i.image_id for i in images[:2])
    assert fake.calls["DeleteImages"] == 1


@pytest.mark.parametrize("code", ["OPERATION_FAILED_RESOURCE_NOT_FOUND", "INVALID_IMAGE_NOT_FOUND"])
async def test_already_gone_counts_as_deleted(make_fake: FakeFactory, code: str) -> None:
    """An image gone before its DeleteImages (alone: 404; among others with whole-call errors) counts as deleted."""
    fake = await make_fake(cloud_kwargs={"batch_errors": "whole", "missing_image_code": code})
    kept = seed_image(fake.cloud, "i-1", "n")
    ends: dict[str, Any] = {}
    async with ZecClient(fake.url, CREDS) as client:
        pruner = Pruner(client, PruneSettings(POLICY, 1, backoff_base=0.001, backoff_cap=0.01))

        async def nothing(_ids: Any) -> None:
            return

        await pruner.delete([("img-gone", "i-1")], before_send=nothing, resolved=lambda i, _n, e: ends.update({i: e}))
        await pruner.delete(
            [("img-gone-too", "i-1"), (kept.image_id, "i-1")],
            before_send=nothing,
            resolved=lambda i, _n, e: ends.update({i: e}),
        )
    assert ends == {"img-gone": None, "img-gone-too": None, kept.image_id: None}
    assert fake.cloud.images[kept.image_id].status == "DELETING"


async def test_listing_that_changes_between_pages_is_read_again(make_fake: FakeFactory) -> None:
    """Images vanishing between two pages (DELETING ones going) make the listing start over, so no image is
    skipped: every image of the policy is seen."""
    fake = await make_fake()
    fake.cloud.clock = lambda: 1000.0 + 10 * fake.calls["DescribeCustomImages"]
    fake.cloud.transition_seconds = 15.0  # gone after the first page, before the second
    images = [img for n in range(300) for img in seed_nights(fake, f"i-{n:03d}", range(5))]
    fake.cloud.delete_images([i.image_id for i in images[:10]])
    async with ZecClient(fake.url, CREDS) as client:
        pruner = Pruner(client, PruneSettings(POLICY, 1, backoff_base=0.001, backoff_cap=0.01))
        listed = await pruner.list_images()
    assert {i.image_id for i in listed} == {i.image_id for i in images[10:]}
    assert fake.calls["DescribeCustomImages"] == 4
    assert pruner.retries == 1


async def test_journal_holds_the_ids_before_delete_images_is_sent(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Every id DeleteImages received is in a journal delete record with its instance."""
    fake = await make_fake()
    seed_nights(fake, "i-1", range(4))
    seed_nights(fake, "i-2", range(4))
    await prune(request(tmp_path, fake, ["i-1", "i-2"], now=night(4), keep=1))
    journal = read_journal(tmp_path / "out" / "journal.log")
    assert set(journal.deleting) == set(fake.cloud.delete_requests)
    assert set(journal.deleting.values()) == {"i-1", "i-2"}


async def test_resume_finishes_and_a_changed_rule_is_refused(tmp_path: Path, make_fake: FakeFactory) -> None:
    """--resume of a finished prune deletes nothing more and keeps its time; a changed --keep is refused."""
    fake = await make_fake()
    seed_nights(fake, "i-1", range(4))
    assert (await prune(request(tmp_path, fake, ["i-1"], now=night(4), keep=2)))[0] == 0
    calls = fake.calls["DeleteImages"]
    code, _ = await prune(request(tmp_path, fake, None, now=night(9), keep=2, resume=True))
    assert code == 0
    assert fake.calls["DeleteImages"] == calls
    assert len(results_of(tmp_path / "out")) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["now"].startswith("2026-11-05T02:00:00")  # night 4: the time --max-age counts from is kept
    with pytest.raises(Exception, match=r"--keep 1 differs from the prune's 2"):
        await prune(request(tmp_path, fake, None, now=night(9), keep=1, resume=True))


async def test_seven_nights_keep_three(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Seven nightly images and prunes with --keep 3: each instance ends with its 3 newest good images; the
    night i-2's image fails deletes nothing of i-2; a quota of instances x (keep + 1) plus the FAILED image kept
    is never hit."""
    clock = Clock()
    ids = ["i-1", "i-2", "i-3"]
    fake = await make_fake(
        instances(*ids), cloud_kwargs={"clock": clock, "image_ready_seconds": 60.0, "image_quota": len(ids) * 4 + 1}
    )
    made: dict[str, list[tuple[int, str]]] = {i: [] for i in ids}
    async with ZecClient(fake.url, CREDS) as client:
        for n in range(1, 8):
            fake.cloud.failed_images = {"i-2"} if n == 5 else set()
            for instance in ids:
                tags = ownership_tags(POLICY, instance, night(n), f"run-{n}")
                image = await client.create_image(instance, f"{instance}-night-{n}", tags=tags)
                made[instance].append((n, image.image_id))
            clock.now += 3600  # the images are made
            code, _ = await prune(request(tmp_path, fake, ids, now=night(n), out=f"night-{n}"))
            assert code == 0
            (i2,) = [r for r in results_of(tmp_path / f"night-{n}") if r["instanceId"] == "i-2"]
            if n == 5:
                assert i2["prunedImageIds"] == []
            clock.now += 86400 - 3600  # the next night: deleted images are gone
    left = live(fake)
    for instance in ids:
        good = [image_id for n, image_id in made[instance] if not (instance == "i-2" and n == 5)]
        mine = {i for i, img in left.items() if img.instance_id == instance and img.status == "AVAILABLE"}
        assert mine == set(good[-3:])
    assert [img.status for i, img in left.items() if img.instance_id == "i-2" and img.status != "AVAILABLE"] == [
        "FAILED"
    ]
    assert "INVALID_IMAGE_QUOTA_EXCEED" not in fake.codes


@pytest.mark.timeout(300)
async def test_kill_9_during_prune_then_resume(tmp_path: Path, make_fake: FakeFactory) -> None:
    """prune killed with SIGKILL at several points, then resumed to the end: no id sent twice, none kept beyond
    --keep, one result line per job."""
    fake = await make_fake(latency=0.01, cloud_kwargs={"transition_seconds": 0.5})
    ids = [f"i-{n:03d}" for n in range(200)]
    for instance in ids:
        seed_nights(fake, instance, range(6))
    jobs = write_csv(tmp_path / "jobs.csv", ids)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "batch", "prune", str(jobs), "--policy", POLICY, "--keep", "2", "--out", str(out)]
    argv += ["--resume", "--endpoint", fake.url, "--rate", "40", "--backoff-base", "0.01", "--backoff-cap", "0.1"]
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
    assert kills >= 3, "the prune finished before it could be killed often enough"
    final = await anyio.run_process(argv, env=env, check=False)
    assert final.returncode == 0, final.stderr.decode()
    started = time.monotonic()
    while any(i.status == "DELETING" for i in fake.cloud.images.values()) and time.monotonic() - started < 10:
        await anyio.sleep(0.1)
        fake.cloud.advance()
    assert max(fake.cloud.delete_requests.values()) == 1
    per_instance = fake.cloud.images_per_instance()
    assert per_instance == dict.fromkeys(ids, 2)
    lines = results_of(out)
    assert sorted(r["instanceId"] for r in lines) == ids
    assert all(r["status"] == "succeeded" for r in lines)
    assert sum(len(r["prunedImageIds"]) for r in lines) == 800
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["deleted"] == 800
    assert len(summary["segments"]) == kills + 1


async def test_orphans_without_a_job_list_prunes_every_instance(tmp_path: Path, make_fake: FakeFactory) -> None:
    """With --orphans and no JOBLIST every instance of the policy is pruned, with a result line (no job line)."""
    fake = await make_fake()
    seed_nights(fake, "i-1", range(3))
    seed_nights(fake, "i-2", range(2))
    seed_nights(fake, "i-3", range(3), policy="weekly")
    code, _ = await prune(request(tmp_path, fake, None, now=night(3), keep=1, orphans=True))
    assert code == 0
    assert fake.cloud.images_per_instance() == {"i-1": 3, "i-2": 2, "i-3": 3}  # DELETING until the delay ends
    lines = results_of(tmp_path / "out")
    assert [(r["instanceId"], len(r["prunedImageIds"]), r["line"]) for r in lines] == [
        ("i-1", 2, None),
        ("i-2", 1, None),
    ]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["JOBS", "--keep", "2"], "prune needs --policy NAME and --keep N", id="no-policy"),
        pytest.param(["JOBS", "--policy", "p"], "prune needs --policy NAME and --keep N", id="no-keep"),
        pytest.param(["--policy", "p", "--keep", "2"], "give a JOBLIST, or --orphans", id="no-job-list"),
        pytest.param(["JOBS", "--policy", "p", "--keep", "0"], "'0' must be positive", id="keep-0"),
        pytest.param(["JOBS", "--policy", "a b", "--keep", "1", "--dry-run"], "--policy 'a b' must be", id="policy"),
        pytest.param(
            ["JOBS", "--policy", "p", "--keep", "1", "--dry-run", "--out", "x"], "--dry-run writes", id="dry-out"
        ),
        pytest.param(["--resume"], "--resume needs --out", id="resume-no-out"),
    ],
)
def test_prune_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], needle: str
) -> None:
    """Bad prune flags exit 2 with a message naming the flag, before any call."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1"])
    argv = [str(jobs) if a == "JOBS" else a for a in argv]
    try:
        code = main(["prune", *argv, "--endpoint", "http://127.0.0.1:9"])
    except SystemExit as exc:  # argparse's own errors
        code = int(str(exc.code))
    assert code == 2
    assert needle in capsys.readouterr().err


async def test_quota_hit_mid_run_then_prune_then_resume(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run that meets INVALID_IMAGE_QUOTA_EXCEED stops with exit 3 and interrupted jobs; prune frees the
    quota, and --resume finishes the run."""
    fake = await make_fake(instances("i-1", "i-2"), cloud_kwargs={"image_quota": 5, "transition_seconds": 0.0})
    seed_nights(fake, "i-1", range(2))
    seed_nights(fake, "i-2", range(2))
    jobs = write_csv(tmp_path / "jobs.csv", ["i-1", "i-2"])
    run = [sys.executable, "-m", "batch", "run", str(jobs), "--out", str(tmp_path / "run"), "--endpoint", fake.url]
    run += ["--quiet", "--concurrency", "1", "--lookup-delay", "0"]
    env = {**os.environ, **ENV}
    first = await anyio.run_process(run, env=env, check=False)
    assert first.returncode == 3
    assert b"INVALID_IMAGE_QUOTA_EXCEED" in first.stdout + first.stderr
    assert sorted(r["status"] for r in results_of(tmp_path / "run")) == ["interrupted", "succeeded"]
    code, _ = await prune(request(tmp_path, fake, ["i-1", "i-2"], now=night(2), keep=1, out="prune"))
    assert code == 0
    resumed = await anyio.run_process([*run, "--resume"], env=env, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert sorted(r["status"] for r in results_of(tmp_path / "run")) == ["succeeded", "succeeded"]
