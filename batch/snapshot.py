"""A run acts on exactly the job list it validated: a copy kept in its run directory.

The job list a user names can change while a run reads it (an editor saves, a script appends)
or be a pipe that can be read only once. So a new run first copies the list, streamed, into its
run directory, then validates and reads only that copy, for the run and for every ``--resume``.
A resume given the list again compares it with the copy and refuses to go on when they differ,
saying which rows were added, changed or removed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UsageError
from .models import Job
from .text import clip

__all__ = ["STDIN", "JobSource", "file_sha256", "list_differences", "snapshot_name", "take_snapshot"]

#: How standard input is named on the command line and in messages.
STDIN = "-"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class JobSource:
    """Where a job list comes from: a regular file, or a stream read once (stdin, a pipe).

    Args:
        display: the name given by the user (``-`` for standard input), used in messages.
        path: the file, when it is a regular file that can be read again.
        stream: the stream, when it can be read only once.
    """

    display: str
    path: Path | None = None
    stream: BinaryIO | None = None

    @classmethod
    def from_argument(cls, text: str) -> JobSource:
        """Open what the command line names: ``-`` is standard input; a FIFO or
        ``/dev/stdin`` is read once as a stream; anything else must be a regular file."""
        if text == STDIN:
            return cls(STDIN, stream=sys.stdin.buffer)
        if text == "":
            msg = "the job list name is empty"
            raise UsageError(msg)
        path = Path(text)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            msg = f"{text}: cannot open the job list: {exc.strerror}"
            raise UsageError(msg) from exc
        if stat.S_ISREG(mode):
            return cls(text, path=path)
        if stat.S_ISDIR(mode):
            msg = f"{text}: is a directory, not a job list"
            raise UsageError(msg)
        try:
            return cls(text, stream=path.open("rb"))
        except OSError as exc:
            msg = f"{text}: cannot open the job list: {exc.strerror}"
            raise UsageError(msg) from exc

    @property
    def label(self) -> str:
        """The name for messages (``<stdin>`` for standard input)."""
        return "<stdin>" if self.display == STDIN else self.display

    @property
    def suffix_name(self) -> str:
        """A name whose suffix tells the format (``-`` has none: ``--format`` is needed)."""
        return "" if self.display == STDIN else self.display


def snapshot_name(fmt: str) -> str:
    """File name of the job list's copy in a run directory."""
    return f"job-list.{fmt}"


def take_snapshot(source: JobSource, dest: Path) -> str:
    """Copy the job list to ``dest`` (streamed, durable, atomic: a crash leaves no half copy).

    Returns:
        The copy's SHA-256, hex (kept in ``run.json``: a resume checks the copy is unchanged).

    Args:
        source: the job list.
        dest: the copy's path.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            if source.stream is not None:
                _copy(source.stream, out, digest)
            else:
                assert source.path is not None
                with source.path.open("rb") as handle:
                    _copy(handle, out, digest)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        where = exc.filename or source.label
        msg = f"cannot copy the job list {source.label} into the run directory ({where}: {exc.strerror})"
        raise UsageError(msg) from exc
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's SHA-256, hex, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(src: BinaryIO, dst: BinaryIO, digest: Any) -> None:
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (read in chunks, stops at the first difference)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _key(job: Job) -> tuple[str, str | None, tuple[tuple[str, str], ...]]:
    return job.image_name, job.resource_group_id, job.tags


def list_differences(current: Iterator[Job], snapshot: Iterator[Job], *, shown: int = 5) -> list[str]:
    """Say how a job list differs from the run's copy, job by job (empty: the same jobs).

    Memory grows with the copy's number of jobs (one small entry each); this runs only when the
    two files' bytes differ.

    Args:
        current: the jobs of the list given now.
        snapshot: the jobs of the run's copy.
        shown: rows named per kind of difference.
    """
    kept: dict[str, tuple[int, int]] = {job.instance_id: (job.line, hash(_key(job))) for job in snapshot}
    added: list[str] = []
    changed: list[str] = []
    for job in current:
        before = kept.pop(job.instance_id, None)
        if before is None:
            added.append(f"line {job.line}: {clip(job.instance_id, 40)}")
        elif before[1] != hash(_key(job)):
            changed.append(f"line {job.line}: {clip(job.instance_id, 40)} (copy line {before[0]})")
    removed = [f"copy line {line}: {clip(iid, 40)}" for iid, (line, _) in kept.items()]
    out = []
    for kind, rows in (("added", added), ("changed", changed), ("removed", removed)):
        if rows:
            more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
            out.append(f"{len(rows)} row(s) {kind}: {'; '.join(rows[:shown])}{more}")
    return out
