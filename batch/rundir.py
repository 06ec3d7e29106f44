"""A run directory: its files' names, its lock, its ``run.json``, and atomic rewrites.

The journal inside it (:mod:`batch.journal`) is the run's record; this module knows only where
things are and how a file is replaced so that a crash leaves the old or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path

from .errors import RunDirectoryError
from .header import RunHeader

__all__ = [
    "EVENTS_FILE",
    "JOURNAL_FILE",
    "LOCK_FILE",
    "RESULTS_FILE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "RunDirectory",
    "write_atomic",
]

RUN_FILE = "run.json"
JOURNAL_FILE = "journal.log"
RESULTS_FILE = "results.jsonl"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


class RunDirectory:
    """A run directory, locked for this process while open.

    Args:
        path: the directory (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._created = False

    def file(self, name: str) -> Path:
        """Path of one of the run's files."""
        return self.path / name

    @property
    def exists(self) -> bool:
        """Whether a run was started here (its ``run.json`` exists)."""
        return self.file(RUN_FILE).exists()

    @property
    def locked(self) -> bool:
        """Whether this process holds the directory's lock."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Take the directory's lock, or fail naming the process that holds it."""
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create run directory {self.path}: {exc.strerror}"
            raise RunDirectoryError(msg) from exc
        fd = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                msg = f"run directory {self.path} is in use by pid {holder}; wait for it or use another --out"
                raise RunDirectoryError(msg) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock; remove the directory again if this process made it and no run started."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None
            if self._created and not self.exists:
                with contextlib.suppress(OSError):
                    self.file(LOCK_FILE).unlink()
                    self.path.rmdir()

    def read_header(self) -> RunHeader:
        """The run's ``run.json``."""
        path = self.file(RUN_FILE)
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"{path} is unreadable ({exc}); this directory cannot be resumed"
            raise RunDirectoryError(msg) from exc
        try:
            return RunHeader.from_record(record)
        except ValueError as exc:
            msg = f"{path} {exc}; this directory cannot be resumed"
            raise RunDirectoryError(msg) from exc

    def write_header(self, header: RunHeader) -> None:
        """Write ``run.json`` atomically."""
        write_atomic(self.file(RUN_FILE), json.dumps(header.to_record(), indent=2).encode() + b"\n")
