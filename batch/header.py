"""``run.json``: what a run is, written once when it starts and read back by ``--resume``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .text import rfc3339

__all__ = ["HEADER_VERSION", "RunHeader", "new_run_id"]

#: 1: the job list was read from its original path; 2: from a snapshot in the run directory,
#: with the run's effective options.
HEADER_VERSION = 2


def new_run_id(now: datetime) -> str:
    """A run id: the UTC start second and 8 random hex digits (``20261130T052356Z-1a2b3c4d``)."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class RunHeader:
    """The run's identity and the settings a resume must keep.

    Args:
        run_id: the run's id (also the name template's ``run_id``).
        created_at: when the run started (UTC).
        date: the name template's ``date``: the run's start, kept across resumes.
        job_list: the job list as the user named it (``-`` for standard input).
        snapshot: file name, in the run directory, of the copy of the job list the run acts
            on; ``None`` for runs of version 1, which read ``job_list`` itself.
        fmt: the job list's format (``csv``, ``json``, ``jsonl``).
        name_template: the name template.
        endpoint: the API base URL.
        options: the run's effective options (:meth:`batch.options.RunOptions.to_record`).
        version: the header's version.
        snapshot_sha256: the copy's SHA-256, checked by every resume.
    """

    run_id: str
    created_at: datetime
    date: datetime
    job_list: str
    snapshot: str | None
    fmt: str | None
    name_template: str
    endpoint: str
    options: dict[str, Any] = field(default_factory=dict)
    version: int = HEADER_VERSION
    #: SHA-256 of the copy (None for runs that kept none, or older versions)
    snapshot_sha256: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON object of ``run.json``."""
        return {
            "version": self.version,
            "runId": self.run_id,
            "createdAt": rfc3339(self.created_at),
            "date": rfc3339(self.date),
            "jobList": self.job_list,
            "snapshot": self.snapshot,
            "snapshotSha256": self.snapshot_sha256,
            "format": self.fmt,
            "nameTemplate": self.name_template,
            "endpoint": self.endpoint,
            "options": self.options,
        }

    @classmethod
    def from_record(cls, record: object) -> RunHeader:
        """Read ``run.json``'s object.

        Raises:
            ValueError: with what is wrong, when it is not a run header this version can use.
        """
        if not isinstance(record, dict):
            msg = "is not a run header (not a JSON object)"
            raise ValueError(msg)
        missing = [k for k in ("runId", "date", "nameTemplate") if not isinstance(record.get(k), str)]
        if missing:
            msg = f"lacks {', '.join(missing)}"
            raise ValueError(msg)
        try:
            date = datetime.fromisoformat(record["date"])
            created = datetime.fromisoformat(str(record.get("createdAt") or record["date"]))
        except ValueError:
            msg = f"has a date that is not ISO 8601: {str(record['date'])[:40]!r}"
            raise ValueError(msg) from None
        version = record.get("version", 1)
        snapshot = record.get("snapshot")
        options = record.get("options") or {}
        fmt = record.get("format")
        if not isinstance(version, int) or version > HEADER_VERSION:
            msg = f"has version {version!r}; this imagebatch reads versions up to {HEADER_VERSION}"
            raise ValueError(msg)
        if snapshot is not None and (not isinstance(snapshot, str) or "/" in snapshot or snapshot.startswith(".")):
            msg = "has a snapshot that is not a plain file name"
            raise ValueError(msg)
        if not isinstance(options, dict):
            msg = "has options that are not a JSON object"
            raise ValueError(msg)
        return cls(
            run_id=record["runId"],
            created_at=created,
            date=date,
            job_list=str(record.get("jobList", "")),
            snapshot=snapshot,
            fmt=fmt if isinstance(fmt, str) else None,
            name_template=record["nameTemplate"],
            endpoint=str(record.get("endpoint", "")),
            options=options,
            version=version,
            snapshot_sha256=sha if isinstance(sha := record.get("snapshotSha256"), str) else None,
        )
