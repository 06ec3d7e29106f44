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

__all__ = ["write_checked_job_list"]


def write_checked_job_list(path: Path, data: bytes, fmt: str, *, what: str = "job list") -> int:
    """Put ``data`` at ``path`` once :class:`~batch.sources.JobList` validates it; return its job count.

    A crash leaves the old file or the new one, never half of one: the data goes to a temporary
    file beside ``path``, synced, checked, then renamed over it.

    Args:
        path: the file.
        data: the whole list.
        fmt: ``csv``, ``json`` or ``jsonl``.
        what: what the list is, for messages.

    Raises:
        UsageError: the list would not validate (its first problems quoted), or the file cannot
            be written.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        result = JobList(tmp, fmt=fmt, display=str(path)).validate()
        if not result.ok:
            shown = "; ".join(result.problems[:3])
            raise UsageError(f"{path}: the {what} would not be a valid job list: {shown}")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the {what}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return result.jobs
