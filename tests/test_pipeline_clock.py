"""Run with an injected clock and client factory: time passes on a fake clock, not by sleeping."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from batch.client import ZecClient
from batch.clock import Clock
from batch.options import RunOptions
from batch.run import Run

from .conftest import CREDS, FakeFactory, instances, write_csv
from .test_runner import FAST

pytestmark = pytest.mark.anyio

#: 2027-01-15T08:00:00Z, the frozen wall clock.
FROZEN = 1_800_000_000.0


class LeapingClock:
    """A monotonic clock on which every read is an hour after the last one."""

    def __init__(self) -> None:
        self.reads = 0

    def monotonic(self) -> float:
        """Real monotonic seconds, plus an hour for every earlier read."""
        self.reads += 1
        return time.monotonic() + 3600.0 * self.reads


async def test_a_one_hour_lookup_delay_passes_on_the_fake_clock(tmp_path: Path, make_fake: FakeFactory) -> None:
    """A lost CreateImage answer with --lookup-delay 3600 is looked up and adopted at once on a
    leaping clock (no sleeping an hour); the wall clock the results record is the injected one."""
    fake = await make_fake(instances("i-0"), scripts={"i-0": ["lost"]})
    leaping = LeapingClock()
    made: list[ZecClient] = []

    def factory(*args: Any, **kwargs: Any) -> ZecClient:
        client = ZecClient(*args, **kwargs)
        made.append(client)
        return client

    write_csv(tmp_path / "jobs.csv", ["i-0"])
    run = Run(
        tmp_path / "jobs.csv",
        tmp_path / "run",
        RunOptions(**{**FAST, "lookup_delay": 3600.0}),
        credentials=CREDS,
        endpoint=fake.url,
        clock=Clock(monotonic=leaping.monotonic, wall=lambda: FROZEN),
        client_factory=factory,
    )
    outcome = await run.execute()
    assert outcome.exit_code == 0
    assert len(made) == 1  # the run's one client came from the factory
    (line,) = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["status"] == "succeeded"
    assert "answer was lost" in record["reason"]
    assert record["startedAt"] == record["endedAt"] == "2027-01-15T08:00:00.000000Z"
    assert fake.inspect()["images"] == 1
    assert fake.calls["CreateImage"] == 1  # found by name: not sent again
    assert leaping.reads > 1
