"""--stop-running gaps found by a hostile test: a signal while StopInstances is out, power facts
summed over a resumed run's segments and carried to adopted jobs, and a refused final restore."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from batch.fake import FakeCloud, FakeConfig, FakeInstance, FakeZenlayer
from batch.options import RunOptions
from batch.run import Run

from .conftest import CREDS, FakeFactory
from .test_lifecycle import LIVE, QUICK, live_run

pytestmark = pytest.mark.anyio


class HeldStop(FakeZenlayer):
    """A fake that says when a call of ``action`` arrives; with ``hold``, the call waits for
    ``release`` before it is answered."""

    def __init__(
        self, cloud: FakeCloud, config: FakeConfig, *, action: str = "StopInstances", hold: bool = True
    ) -> None:
        super().__init__(cloud, config)
        self.action, self.hold = action, hold
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-ZC-Action") == self.action:
            self.arrived.set()
            if self.hold:
                await self.release.wait()
        return await super()._handle(request)


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
        if isinstance(fake, HeldStop):
            fake.release.set()
        await fake.stop()


def results(out: Path) -> list[dict[str, Any]]:
    """The run directory's result lines."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def write_jobs(path: Path, ids: list[str]) -> Path:
    """A one-column job list."""
    path.write_text("instanceId\n" + "".join(f"{i}\n" for i in ids))
    return path


@pytest.mark.parametrize(
    "answered",
    [
        pytest.param(True, id="answered-within-the-grace"),
        pytest.param(False, id="never-answered"),
    ],
)
async def test_sigterm_while_stop_instances_is_out_ends_those_jobs_interrupted(
    tmp_path: Path, own_fakes: Callable[[FakeZenlayer], Any], answered: bool
) -> None:
    """SIGTERM while StopInstances is in flight: each of its jobs gets one `interrupted` line
    (exit 143), and its instance, which the stop may have reached, is RUNNING at the end."""
    ids = ["x-0", "x-1"]
    cloud = FakeCloud([FakeInstance(i, status="RUNNING") for i in ids], **QUICK)
    fake = await own_fakes(HeldStop(cloud, FakeConfig()))
    out = tmp_path / "run"
    options = RunOptions(**{**LIVE, "grace": 1.0, "max_stopped": "2"})
    run = Run(write_jobs(tmp_path / "jobs.csv", ids), out, options, credentials=CREDS, endpoint=fake.url)
    run.handle_signals = True
    outcome: list[Any] = []

    async def execute() -> None:
        outcome.append(await run.execute())

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        with anyio.fail_after(30):
            await fake.arrived.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        if answered:
            await anyio.sleep(0.2)
            fake.release.set()
    if not answered:
        fake.release.set()
    assert outcome[0].exit_code == 143
    lines = results(out)
    assert sorted(r["instanceId"] for r in lines) == ids  # one line each
    assert {r["status"] for r in lines} == {"interrupted"}
    states = fake.inspect()["instanceStates"]
    assert all(states[i] == "RUNNING" for i in ids), states


async def test_a_refused_batch_in_the_final_restore_starts_each_instance_on_its_own(make_fake: FakeFactory) -> None:
    """Every StartInstances naming x-1 is refused as a whole: the restore still starts x-0 (each
    id on its own after the batch failed) and reports only x-1 as left stopped."""
    from batch.client import ZecClient
    from batch.power import PowerLedger, restore_power

    fake = await make_fake(
        [FakeInstance("x-0"), FakeInstance("x-1")],
        cloud_kwargs=QUICK,
        scripts={"StartInstances": {"x-1": ["503"] * 200}},
    )
    ledger = PowerLedger(record_started=lambda _iid: None)
    ledger.stop_sent("x-0")
    ledger.stop_sent("x-1")
    async with ZecClient(fake.url, CREDS, total_timeout=5.0) as client:
        left = await restore_power(client, ledger, deadline=anyio.current_time() + 3, interval=0.1)
    assert left == ["x-1"]
    states = fake.inspect()["instanceStates"]
    assert (states["x-0"], states["x-1"]) == ("RUNNING", "STOPPED")


async def test_power_counters_are_summed_over_a_resumed_runs_processes(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A run stops x-0 and x-1 and starts only x-0 (x-1's start refused: exit 5); its --resume
    starts x-1: the summary counts both stops, both starts, and both downtimes."""
    fleet = [FakeInstance("x-0", status="RUNNING"), FakeInstance("x-1", status="RUNNING")]
    fake = await make_fake(fleet, cloud_kwargs=QUICK, scripts={"StartInstances": {"x-1": ["fail"] * 50}})
    first, _ = await live_run(tmp_path, fake, [{"instanceId": "x-0"}, {"instanceId": "x-1"}], start_timeout=1.0)
    assert first.exit_code == 5
    before = first.summary["power"]
    assert (before["instancesStopped"], before["instancesStarted"]) == (2, 1)
    healthy = await make_fake([FakeInstance("x-0", status="RUNNING"), FakeInstance("x-1")], cloud_kwargs=QUICK)
    again = await Run(
        None, tmp_path / "run", RunOptions(resume=True), credentials=CREDS, endpoint=healthy.url
    ).execute()
    assert again.exit_code == 0
    power = again.summary["power"]
    assert (power["instancesStopped"], power["instancesStarted"]) == (2, 2)
    assert power["instancesLeftStopped"] == []
    # x-1 was down from the first process's stop to this process's start: longer than x-0.
    assert power["downtimeSecondsLongest"] > before["downtimeSecondsLongest"]
    assert power["downtimeSecondsTotal"] > before["downtimeSecondsTotal"] + before["downtimeSecondsLongest"] / 2


async def test_a_job_adopted_on_resume_keeps_its_power_facts(
    tmp_path: Path, own_fakes: Callable[[FakeZenlayer], Any]
) -> None:
    """SIGTERM while x-0's image is CREATING leaves it stopped (exit 143); the --resume starts it and
    adopts the image: the job's line says it was RUNNING, stopped and started, with its downtime."""
    cloud = FakeCloud([FakeInstance("x-0", status="RUNNING")], **{**QUICK, "image_ready_seconds": 2.0})
    fake = await own_fakes(HeldStop(cloud, FakeConfig(), action="CreateImage", hold=False))
    out = tmp_path / "run"
    options = RunOptions(**{**LIVE, "grace": 0.3})
    run = Run(write_jobs(tmp_path / "jobs.csv", ["x-0"]), out, options, credentials=CREDS, endpoint=fake.url)
    run.handle_signals = True
    outcome: list[Any] = []

    async def execute() -> None:
        outcome.append(await run.execute())

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        with anyio.fail_after(30):
            await fake.arrived.wait()
        os.kill(os.getpid(), signal.SIGTERM)
    assert outcome[0].exit_code == 143
    assert results(out)[0]["status"] == "interrupted"
    again = await Run(None, out, RunOptions(resume=True), credentials=CREDS, endpoint=fake.url).execute()
    assert again.exit_code == 0
    record = results(out)[0]
    assert record["status"] == "succeeded"
    assert "adopted" in record["reason"]
    power = record["power"]
    assert power["stateAtStart"] == "RUNNING"
    assert power["actions"] == ["stopped", "started"]
    assert power["finalState"] == "RUNNING"
    assert power["downtimeSeconds"] is not None
    assert power["downtimeSeconds"] > 0
    assert fake.inspect()["instanceStates"]["x-0"] == "RUNNING"
    assert fake.inspect()["images"] == 1
