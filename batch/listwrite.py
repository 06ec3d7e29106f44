"""Write a job list only if the project's reader accepts it, and atomically.

``imagebatch inventory`` and ``imagebatch report --failed-jobs`` make job lists for a later run;
a list that would not validate is an error here, where its cause is known, not at that run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .errors import UsageError
from .sources import JobList
from .text import clip

__all__ = ["check_target", "write_checked_job_list"]


def check_target(path: Path, flag: str) -> Path:
    """Where a list named ``path`` goes: through symlinks to the file they name, which must be a
    regular file or not exist yet.

    A symlink is followed, not replaced by a file; ``/dev/stdout``, a FIFO or a directory is
    refused (the list is put in place by a rename, which would replace the device node).

    Args:
        path: the file as given.
        flag: the option that named it, for messages (``-o``).

    Raises:
        UsageError: the target exists and is not a regular file.
    """
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13
        msg = f"{flag} {clip(str(path))}: cannot follow the path: {exc}"
        raise UsageError(msg) from None
    if target.exists() and not target.is_file():
        shown = f"{clip(str(path))}" + (f" (a link to {clip(str(target))})" if path.is_symlink() else "")
        msg = f"{flag} {shown}: not a regular file; give the path of a file to write the list to"
        raise UsageError(msg)
    return target


def write_checked_job_list(path: Path, data: bytes, fmt: str, *, what: str = "job list") -> int:
    """Put ``data`` at ``path`` once :class:`~batch.sources.JobList` validates it; return its job count.

    A crash leaves the old file or the new one, never half of one: the data goes to a temporary
    file beside ``path``, synced, checked, then renamed over it. A symlink is followed: its target
    is written (atomically, in the target's directory) and the link stays.

    Args:
        path: the file.
        data: the whole list.
        fmt: ``csv``, ``json`` or ``jsonl``.
        what: what the list is, for messages.

    Raises:
        UsageError: the list would not validate (its first problems quoted), or the file cannot
            be written, or it is not a regular file.
    """
    target = check_target(path, "the " + what)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        result = JobList(tmp, fmt=fmt, display=str(path)).validate()
        if not result.ok:
            shown = "; ".join(result.problems[:3])
            raise UsageError(f"{path}: the {what} would not be a valid job list: {shown}")
        tmp.replace(target)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the {what}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return result.jobs
