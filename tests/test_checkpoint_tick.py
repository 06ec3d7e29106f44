"""The run's tick: a checkpoint of its own only for calls the last one missed, at most every 10 s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch.fake import FakeInstance
from batch.journal import JOURNAL_FILE
from batch.options import RunOptions
from batch.run import Run
from batch.run.tally import CALLS_CHECKPOINT_SECONDS, checkpoint_due

from .conftest import CREDS, FakeFactory, write_csv

README = Path(__file__).resolve().parent.parent / "README.md"


def _counters(total: int) -> dict[str, Any]:
    return {"apiCalls": {"total": total, "byAction": {"CreateImage": total}, "byCode": {}}}


@pytest.mark.parametrize(
    ("calls", "last", "since", "due"),
    [
        pytest.param(0, None, 1e9, False, id="no-call-no-checkpoint"),
        pytest.param(3, None, 1e9, True, id="calls-and-none-written-yet"),
        pytest.param(7, _counters(7), 60.0, False, id="last-checkpoint-has-every-call"),
        pytest.param(8, _counters(7), 1.0, False, id="new-calls-but-checkpoint-1s-old"),
        pytest.param(8, _counters(7), CALLS_CHECKPOINT_SECONDS - 0.01, False, id="new-calls-just-under-the-interval"),
        pytest.param(8, _counters(7), CALLS_CHECKPOINT_SECONDS, True, id="new-calls-and-interval-over"),
    ],
)
def test_checkpoint_due(calls: int, last: dict[str, Any] | None, since: float, due: bool) -> None:
    """A tick checkpoints only calls the last checkpoint missed, and only once it is old enough."""
    assert checkpoint_due(calls, last, since) is due


def _checkpoint_only_groups(journal: Path) -> int:
    """Groups that held nothing but the checkpoint (every group ends with one)."""
    kinds = [json.loads(line.split(" ", 1)[1])["type"] for line in journal.read_text().splitlines()]
    return sum(1 for before, kind in zip(["segment", *kinds], kinds, strict=False) if kind == before == "segment")


@pytest.mark.anyio
async def test_polls_of_a_wait_do_not_write_a_checkpoint_each_tick(tmp_path: Path, make_fake: FakeFactory) -> None:
    """Three seconds of --wait polls with no job ending add no checkpoint until the run's last one."""
    ids = ["w-0", "w-1"]
    fake = await make_fake([FakeInstance(i) for i in ids], cloud_kwargs={"image_ready_seconds": 3.5})
    options = RunOptions(wait=True, poll_interval=0.1, rate=500.0, seed=1)
    outcome = await Run(
        write_csv(tmp_path / "jobs.csv", ids), tmp_path / "run", options, credentials=CREDS, endpoint=fake.url
    ).execute()
    assert outcome.exit_code == 0
    assert outcome.summary["apiCalls"]["byAction"]["DescribeCustomImages"] >= 10  # the polls were made
    # Before: one checkpoint-only group a second (each tick saw new poll calls), 3 or more.
    # Now: the last one only, which says how the process ended.
    assert _checkpoint_only_groups(tmp_path / "run" / JOURNAL_FILE) <= 1


def test_readme_states_how_late_a_killed_process_counts_its_calls() -> None:
    """The README's promise for a killed process's counters names the tick's interval."""
    text = README.read_text(encoding="utf-8")
    assert f"within 50 ms of its last result and {CALLS_CHECKPOINT_SECONDS:g} s of its last call" in text
