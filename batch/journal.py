"""The run directory as a crash-safe journal.

Files in a run directory:

* ``run.json``: what the run is (job list, name template, date, run id); written once,
  atomically, and read back by ``--resume``.
* ``journal.log``: the source of truth. One record a line, ``CRC32 JSON``; ``intent`` records
  are durable before their CreateImage is sent (``delete`` records before a ``prune``'s
  DeleteImages), ``result`` records when a job ends. A line torn
  by a crash fails its checksum and is ignored, never misread.
* ``results.jsonl``: one plain JSON line per finished job, for people and tools. It is written
  with the journal and rebuilt from it on resume, so it never keeps a torn line.
* ``events.jsonl``, ``summary.json``: the attempt log and the run's totals.
* ``.lock``: held with ``flock`` while a process runs there; the kernel drops it when the
  process dies, so a killed run never blocks its resume.

Durability is grouped: a writer task takes every record queued since its last write and
writes them with one ``write``. A group holding an intent (or a stop) is synced before its
waiters go on; results and checkpoints, which nobody waits for, are written at once (so a
``kill -9`` keeps them) and synced with the next group that must be, or ``sync_interval``
after they were written, whichever is first. A result lost with the machine's page cache
costs its job a look-up by name on resume, never a second image: its intent is durable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ._jsonenc import compact_json as _compact_json
from .models import Job, JobResult, Status
from .rundir import (
    EVENTS_FILE,
    JOURNAL_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    RunDirectory,
    write_atomic,
)

__all__ = [
    "EVENTS_FILE",
    "JOURNAL_FILE",
    "LOCK_FILE",
    "RESULTS_FILE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "JournalState",
    "JournalWriter",
    "RunDirectory",
    "compact_journal",
    "encode_record",
    "read_journal",
    "rebuild_results",
    "write_atomic",
]

_SAFE = re.compile(r"[A-Za-z0-9._:-]+")


def encode_record(record: dict[str, Any]) -> bytes:
    """One journal line: CRC32 of the JSON text, a space, the JSON text, a newline."""
    return _frame(_compact_json(record).encode())


def _frame(text: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _decode_record(line: bytes) -> dict[str, Any] | None:
    if len(line) < 10 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    text = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(text):
            return None
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass
class JournalState:
    """What a journal says: jobs that may have been sent, jobs that ended, earlier segments.

    ``results`` holds each job's last result, final or not (``unknown`` and ``interrupted`` are
    not final: a resumed run runs those jobs again). ``segments`` holds each earlier process's
    last checkpoint of its counters, by segment id, in order.
    """

    intents: dict[str, str] = field(default_factory=dict)
    #: instances this run sent StopInstances for (the record is durable before the call)
    stopped: set[str] = field(default_factory=set)
    #: instances this run stopped and then saw RUNNING again
    started: set[str] = field(default_factory=set)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``prune``: images DeleteImages may have been sent for (image id: instance id)
    deleting: dict[str, str] = field(default_factory=dict)
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: records that failed their checksum (a torn last record is normal after a crash)
    torn: int = 0
    #: byte offsets of damaged records followed by good ones (not a crash's torn tail)
    corrupt_offsets: list[int] = field(default_factory=list)

    def final_results(self) -> dict[str, dict[str, Any]]:
        """The results of the jobs that ended for good."""
        return {i: r for i, r in self.results.items() if _is_final(r)}


def _is_final(result: Mapping[str, Any]) -> bool:
    try:
        return Status(str(result.get("status"))).final
    except ValueError:
        return False


def read_journal(path: Path) -> JournalState:
    """Read a journal, skipping (and counting) records that fail their checksum."""
    state = JournalState()
    if not path.exists():
        return state
    offset = 0
    bad: list[int] = []
    with path.open("rb") as handle:
        for line in handle:
            record = _decode_record(line)
            if record is None:
                state.torn += 1
                bad.append(offset)
            else:
                state.corrupt_offsets += bad
                bad = []
                _apply(state, record)
            offset += len(line)
    return state


def _apply(state: JournalState, record: dict[str, Any]) -> None:
    kind = record.get("type")
    try:
        if kind == "intent":
            state.intents[str(record["instanceId"])] = str(record["imageName"])
        elif kind == "result":
            result = record["result"]
            state.results[str(result["instanceId"])] = result
        elif kind == "stop":
            state.stopped.add(str(record["instanceId"]))
            state.started.discard(str(record["instanceId"]))
        elif kind == "started":
            state.started.add(str(record["instanceId"]))
        elif kind == "delete":
            state.deleting.update({str(i): str(n) for i, n in record["images"].items()})
        elif kind == "segment":
            segment = record["segment"]
            state.segments[str(segment["id"])] = segment
    except (KeyError, TypeError):
        state.torn += 1  # checksummed but not a record of ours: never misread it


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def rebuild_results(directory: RunDirectory, state: JournalState) -> None:
    """Rewrite ``results.jsonl`` from the journal: one line per job that ended for good.

    Jobs whose last result is not final (``unknown``, ``interrupted``) are left out: the
    resumed run runs them again and writes their line when they end.
    """
    lines = [_compact_json(r) + "\n" for r in state.final_results().values()]
    write_atomic(directory.file(RESULTS_FILE), "".join(lines).encode())


def compact_journal(directory: RunDirectory, state: JournalState) -> None:
    """Rewrite the journal without damaged records (the state it holds stays the same)."""
    out = [encode_record({"type": "intent", "instanceId": i, "imageName": n}) for i, n in state.intents.items()]
    out += [encode_record({"type": "result", "result": r}) for r in state.results.values()]
    out += [encode_record({"type": "stop", "instanceId": i}) for i in sorted(state.stopped)]
    out += [encode_record({"type": "started", "instanceId": i}) for i in sorted(state.started & state.stopped)]
    if state.deleting:
        out.append(encode_record({"type": "delete", "images": state.deleting}))
    out += [encode_record({"type": "segment", "segment": s}) for s in state.segments.values()]
    write_atomic(directory.file(JOURNAL_FILE), b"".join(out))


def _intent_record(job: Job) -> bytes:
    # Ids and names were validated to plain ASCII letters, digits and ._:- so they need no JSON
    # escaping; anything else goes through json.dumps.
    if _SAFE.fullmatch(job.instance_id) and _SAFE.fullmatch(job.image_name):
        text = b'{"type":"intent","instanceId":"%s","imageName":"%s"}' % (
            job.instance_id.encode(),
            job.image_name.encode(),
        )
        return _frame(text)
    return encode_record({"type": "intent", "instanceId": job.instance_id, "imageName": job.image_name})


class JournalWriter:
    """Appends journal and result records with grouped fsync.

    Run :meth:`run` in the run's task group; :meth:`intent` returns once the record is durable;
    :meth:`result` queues a result; :meth:`close` flushes everything and ends :meth:`run`.

    Args:
        directory: the (locked) run directory.
        result_delay: longest time a result waits for company before its group is written.
        sync_interval: longest time written records wait for an fsync when no intent or stop
            calls for one (nothing new written: no fsync at all).
        before_write: called before each group is written (the run flushes its event log there,
            so every event logged before a record is on disk when the record is).
    """

    def __init__(
        self,
        directory: RunDirectory,
        *,
        result_delay: float = 0.05,
        sync_interval: float = 1.0,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.result_delay = result_delay
        self.sync_interval = sync_interval
        self._before_write = before_write
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._journal_fd = os.open(directory.file(JOURNAL_FILE), flags, 0o644)
        self._results_fd = os.open(directory.file(RESULTS_FILE), flags, 0o644)
        self._pending: list[tuple[bytes, bytes]] = []
        self._batch_done = anyio.Event()
        # Set when the writer has something to do now: the first record of a group, an urgent
        # one, or close. Later results of a group do not wake it: it collects them after its
        # linger (one wake-up per group, not per result).
        self._wakeup = anyio.Event()
        self._closing = False
        self._closed = anyio.Event()
        self._urgent = False
        self._fds_open = True
        #: when written records not yet synced were first written (None: all synced)
        self._unsynced_since: float | None = None
        self.syncs = 0
        self.writes = 0
        self.records = 0
        #: called before each group is written; its record (the run's counters) joins the group
        self.checkpoint: Callable[[], dict[str, Any]] | None = None
        #: the counters of the last checkpoint written, and when (``time.monotonic()``; 0: never)
        self.last_checkpoint: dict[str, Any] | None = None
        self.checkpointed_at = 0.0

    def _submit(self, journal: bytes, result: bytes = b"", *, urgent: bool = False) -> anyio.Event:
        if urgent:
            self._urgent = True
        if urgent or not self._pending:
            self._wakeup.set()
        self._pending.append((journal, result))
        return self._batch_done

    async def intent(self, *jobs: Job) -> None:
        """Record that CreateImage may be sent for ``jobs``; returns when that is durable."""
        records = b"".join(_intent_record(job) for job in jobs)
        await self._submit(records, urgent=True).wait()

    async def stopping(self, instance_id: str) -> None:
        """Record that StopInstances may be sent for an instance; returns when that is durable.

        From then on, until :meth:`started`, ``--resume`` starts the instance before anything else.
        """
        await self._submit(encode_record({"type": "stop", "instanceId": instance_id}), urgent=True).wait()

    def started(self, instance_id: str) -> None:
        """Queue the record that an instance this run stopped is RUNNING again."""
        self._submit(encode_record({"type": "started", "instanceId": instance_id}))

    async def deleting(self, images: Mapping[str, str]) -> None:
        """Record that DeleteImages may be sent for ``images`` (id: instance); returns when durable.

        Args:
            images: the image ids of the call, each with its instance.
        """
        self._urgent = True
        await self._submit(encode_record({"type": "delete", "images": dict(images)})).wait()

    def result(self, result: JobResult) -> None:
        """Queue a job's final result (written within ``result_delay``, synced within ``sync_interval``)."""
        self.result_record(result.to_record())

    def result_record(self, record: Mapping[str, Any]) -> None:
        """Queue a result line given as its JSON object (``prune``'s lines are not :class:`JobResult`).

        Args:
            record: the line; it needs ``instanceId`` and ``status``.
        """
        text = _compact_json(dict(record)).encode()
        # Encoded once: the same JSON is the results.jsonl line and the journal record's payload.
        self._submit(_frame(b'{"type":"result","result":' + text + b"}"), text + b"\n")

    def _checkpoint_record(self) -> bytes:
        if self.checkpoint is None:
            return b""
        self.last_checkpoint, self.checkpointed_at = self.checkpoint(), time.monotonic()
        return encode_record({"type": "segment", "segment": self.last_checkpoint})

    def note(self) -> None:
        """Queue a checkpoint on its own (nothing else to write, but the counters moved)."""
        self._submit(b"")

    def _sync(self) -> None:
        # Only the journal must be durable at once: results.jsonl is rebuilt from it on resume,
        # and synced when the writer closes.
        os.fdatasync(self._journal_fd)

    async def _sleep_until_woken(self, seconds: float | None) -> None:
        """Wait for :attr:`_wakeup` (at most ``seconds``), then re-arm it."""
        if not self._wakeup.is_set():
            with anyio.move_on_after(seconds):
                await self._wakeup.wait()
        if self._wakeup.is_set():
            self._wakeup = anyio.Event()

    async def run(self) -> None:
        """The writer loop: write each group of records; fsync when a waiter or the interval asks."""
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        if self._unsynced_since is not None:
                            await self._sync_now()
                        return
                    timeout = None
                    if self._unsynced_since is not None:
                        timeout = max(0.0, self._unsynced_since + self.sync_interval - time.monotonic())
                        if timeout == 0:
                            await self._sync_now()  # written a while ago and nothing came since
                            continue
                    await self._sleep_until_woken(timeout)
                    continue
                if not self._urgent and not self._closing:
                    # Only results are queued and nobody waits on them: let more gather so one
                    # write covers many. Re-armed first: the set that started this group is used.
                    if self._wakeup.is_set():
                        self._wakeup = anyio.Event()
                    await self._sleep_until_woken(self.result_delay)
                urgent, self._urgent = self._urgent, False
                batch, done = self._pending, self._batch_done
                self._pending, self._batch_done = [], anyio.Event()
                if self._before_write is not None:
                    self._before_write()
                _write_all(self._journal_fd, b"".join(j for j, _ in batch) + self._checkpoint_record())
                results = b"".join(r for _, r in batch)
                if results:
                    _write_all(self._results_fd, results)
                self.writes += 1
                self.records += len(batch)
                now = time.monotonic()
                if self._unsynced_since is None:
                    self._unsynced_since = now
                if urgent or self._closing or now - self._unsynced_since >= self.sync_interval:
                    await self._sync_now()
                done.set()
        finally:
            self._closed.set()

    async def _sync_now(self) -> None:
        self._unsynced_since = None
        # fsync in a thread: the loop keeps queueing the next group meanwhile. Records written
        # while it runs are then synced by the next group, or the interval after them.
        await anyio.to_thread.run_sync(self._sync)
        self.syncs += 1

    async def close(self) -> None:
        """Flush what is queued, stop :meth:`run`, close the files."""
        self._closing = True
        self._wakeup.set()
        await self._closed.wait()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._fds_open:
            self._fds_open = False
            with contextlib.suppress(OSError):
                os.fsync(self._results_fd)
            os.close(self._journal_fd)
            os.close(self._results_fd)

    def close_now(self) -> None:
        """Write what is queued without waiting for the loop (used after a hard stop)."""
        if not self._fds_open:
            return
        batch, self._pending = self._pending, []
        if self._before_write is not None:
            self._before_write()
        # The last checkpoint goes in even with nothing queued: it says how the process ended.
        _write_all(self._journal_fd, b"".join(j for j, _ in batch) + self._checkpoint_record())
        _write_all(self._results_fd, b"".join(r for _, r in batch if r))
        self._sync()
        self._close_fds()
