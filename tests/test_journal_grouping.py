"""The journal writer's grouping: results written at once without an fsync of their own,
synced with the next intent or within the interval, and no fsync when nothing is new."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from batch.journal import JOURNAL_FILE, RESULTS_FILE, JournalWriter, RunDirectory, read_journal
from batch.models import Job, JobResult, Status


@asynccontextmanager
async def _writer(path: Path, **kwargs: float) -> AsyncIterator[JournalWriter]:
    directory = RunDirectory(path)
    directory.lock()
    writer = JournalWriter(directory, **kwargs)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            yield writer
            await writer.close()
    finally:
        directory.unlock()


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - the writer exposes counters, not events
            await anyio.sleep(0.005)


def _result(n: int) -> JobResult:
    return JobResult(f"i-{n}", f"n-{n}", Status.SUCCEEDED, image_id=f"img-{n}")


@pytest.mark.anyio
async def test_results_are_written_in_one_group_without_an_fsync(tmp_path: Path) -> None:
    """50 results queued together take one write and no fsync; the next intent syncs them all."""
    async with _writer(tmp_path, result_delay=0.0, sync_interval=3600) as writer:
        for n in range(50):
            writer.result(_result(n))
        await _until(lambda: writer.writes >= 1)
        assert (writer.writes, writer.syncs) == (1, 0)
        # Written (a kill -9 keeps them), though not yet synced.
        assert len(read_journal(tmp_path / JOURNAL_FILE).results) == 50
        assert (tmp_path / RESULTS_FILE).read_text().count("\n") == 50
        await writer.intent(Job(line=2, instance_id="i-99", image_name="n-99"))
        assert writer.syncs == 1
    state = read_journal(tmp_path / JOURNAL_FILE)
    assert len(state.results) == 50
    assert state.intents == {"i-99": "n-99"}


@pytest.mark.anyio
async def test_written_results_are_synced_within_the_interval_then_never_again(tmp_path: Path) -> None:
    """With nothing else coming, results are synced once within sync_interval, and an idle writer
    syncs nothing more."""
    async with _writer(tmp_path, result_delay=0.0, sync_interval=0.05) as writer:
        writer.result(_result(1))
        await _until(lambda: writer.syncs == 1)
        await anyio.sleep(0.3)  # six intervals with nothing new
        assert writer.syncs == 1
        assert writer.writes == 1


@pytest.mark.anyio
async def test_an_intent_arriving_while_results_linger_is_synced_without_waiting(tmp_path: Path) -> None:
    """An intent cuts a result group's linger short: it is durable long before the result delay."""
    async with _writer(tmp_path, result_delay=3600, sync_interval=3600) as writer:
        writer.result(_result(1))
        await anyio.lowlevel.checkpoint()  # the writer is lingering for more results
        with anyio.fail_after(10):
            await writer.intent(Job(line=2, instance_id="i-2", image_name="n-2"))
        assert (writer.writes, writer.syncs) == (1, 1)
    assert set(read_journal(tmp_path / JOURNAL_FILE).results) == {"i-1"}
