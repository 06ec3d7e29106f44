"""Jobs, results and their status: frozen values that cross every layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .text import rfc3339

__all__ = ["Job", "JobResult", "Status"]


class Status(StrEnum):
    """How a job ended.

    ``succeeded``, ``failed`` and ``skipped`` are final. ``unknown`` (a CreateImage may have been
    applied and no look-up could tell) and ``interrupted`` (the run stopped before the job
    ended) are not: ``--resume`` runs those jobs again, looking their image up first.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        """Whether a job with this status is finished for good (``--resume`` leaves it)."""
        return self in _FINAL


_FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.SKIPPED})


@dataclass(frozen=True, slots=True)
class Job:
    """One instance to image, as read and checked from a job list.

    Args:
        line: line of the job list where the job starts (1-based).
        instance_id: the source instance.
        image_name: the image name to create (from the row or the name template).
        resource_group_id: resource group for the image, or ``None`` for the default.
        tags: ``(key, value)`` pairs for the image.
        fake: the fake-only columns (``fakeGpu``, ...), read by ``imagebatch fake-server``.
        group: the job list's ``group`` column (a cluster, a service, a zone), for
            ``--max-stopped-per-group``.
    """

    line: int
    instance_id: str
    image_name: str
    resource_group_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    fake: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """What happened to one job: one line of ``results.jsonl``.

    Args:
        instance_id: the source instance.
        image_name: the image name asked for.
        status: succeeded, failed or skipped.
        image_id: the image made or found, if any.
        image_status: that image's status when the job ended (``CREATING`` right after
            CreateImage; ``AVAILABLE`` or ``FAILED`` with ``--wait``).
        error: ``{"code", "message", "status", "requestId"}`` of the error that ended the job.
        reason: a short human explanation for skipped jobs and adopted images.
        attempts: API calls made for this job (CreateImage and look-ups).
        request_ids: the API's request ids for those calls, in order.
        started_at: Unix time the first call started (or the job was decided); written as
            RFC 3339 UTC text.
        ended_at: Unix time the job ended; written as RFC 3339 UTC text.
        line: the job's line in the job list.
        power: with ``--stop-running``: the instance's state at the start, the power actions
            taken (stopped, forced, started), its downtime and its final state.
    """

    instance_id: str
    image_name: str
    status: Status
    image_id: str | None = None
    image_status: str | None = None
    error: Mapping[str, Any] | None = None
    reason: str | None = None
    attempts: int = 0
    request_ids: tuple[str, ...] = ()
    started_at: float = 0.0
    ended_at: float = 0.0
    line: int = 0
    power: Mapping[str, Any] | None = None

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return max(0.0, self.ended_at - self.started_at)

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to ``results.jsonl``."""
        return {
            "instanceId": self.instance_id,
            "imageName": self.image_name,
            "status": self.status.value,
            "imageId": self.image_id,
            "imageStatus": self.image_status,
            "error": dict(self.error) if self.error else None,
            "reason": self.reason,
            "attempts": self.attempts,
            "requestIds": list(self.request_ids),
            "startedAt": rfc3339(self.started_at),
            "endedAt": rfc3339(self.ended_at),
            "durationSeconds": round(self.duration, 6),
            "line": self.line,
            **({"power": dict(self.power)} if self.power is not None else {}),
        }
