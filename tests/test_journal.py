"""The journal: checksummed records, grouped fsync, atomic rebuilds."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batch.journal import JOURNAL_FILE, RESULTS_FILE, JournalWriter, RunDirectory, encode_record, read_journal
from batch.models import Job, JobResult, Status


def test_records_round_trip_and_corruption_is_detected(tmp_path: Path) -> None:
    """A good record reads back; a flipped byte, a cut line or a zero-filled tail is counted as torn."""
    path = tmp_path / JOURNAL_FILE
    good = encode_record({"type": "intent", "instanceId": "i-1", "imageName": "n-1"})
    flipped = bytearray(encode_record({"type": "intent", "instanceId": "i-2", "imageName": "n-2"}))
    flipped[20] ^= 0x01
    path.write_bytes(good + bytes(flipped) + good[:15] + b"\0" * 30)
    state = read_journal(path)
    assert state.intents == {"i-1": "n-1"}
    assert state.torn == 2


@pytest.mark.anyio
async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """100 concurrent intents are all durable on return, with far fewer fsyncs than records."""
    directory = RunDirectory(tmp_path)
    directory.lock()
    writer = JournalWriter(directory)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        async with anyio.create_task_group() as intents:
            for n in range(100):
                intents.start_soon(writer.intent, Job(line=n + 2, instance_id=f"i-{n}", image_name=f"n-{n}"))
        writer.result(JobResult("i-0", "n-0", Status.SUCCEEDED, image_id="img-1"))
        await writer.close()
    directory.unlock()
    state = read_journal(tmp_path / JOURNAL_FILE)
    assert len(state.intents) == 100
    assert state.results["i-0"]["imageId"] == "img-1"
    assert writer.records == 101
    assert writer.syncs < 20
    assert (tmp_path / RESULTS_FILE).read_text().count("\n") == 1


def test_lock_is_exclusive(tmp_path: Path) -> None:
    """A second holder is refused with the first one's pid; after unlock it can lock."""
    from batch import RunDirectoryError

    first, second = RunDirectory(tmp_path), RunDirectory(tmp_path)
    first.lock()
    with pytest.raises(RunDirectoryError, match="in use by pid"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
