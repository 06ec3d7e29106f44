"""``summary.json``: the whole run's totals, over every process that worked on it.

A run may be worked on by several processes (killed, resumed). Each process is a *segment*:
it checkpoints its counters into the journal with every group of records it writes, so that a
process killed with ``kill -9`` still counts, up to its last checkpoint. The summary adds the
segments up: API calls, retries and wall time cover the whole run, ``startedAt`` is the first
start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ApiError
from .header import RunHeader
from .models import Status
from .text import rfc3339

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_FATAL",
    "EXIT_HALTED",
    "EXIT_LEFT_STOPPED",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "build_summary",
    "exit_code_for",
    "segment_record",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_FATAL = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
#: --halt or --canary halted the run (too many jobs failed; the rest were not started)
EXIT_HALTED = 4
#: an instance this run stopped is not RUNNING again at the end (--stop-running)
EXIT_LEFT_STOPPED = 5
_SIGNAL_EXITS = {"SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM}


def exit_code_for(
    *,
    stopped_by: str | None,
    fatal: bool,
    by_status: Mapping[str, int],
    left_stopped: bool = False,
    halted: bool = False,
    not_deleted: int = 0,
) -> int:
    """The exit code of a process: its signal, a fatal stop, then how the jobs ended.

    Args:
        stopped_by: ``SIGINT``/``SIGTERM`` when a signal stopped this process.
        fatal: the run stopped early (fatal API error, job list changed under it).
        by_status: jobs by their latest status, over the whole run.
        left_stopped: an instance the run stopped is not RUNNING again (overrides 0, 1, 3 and 4).
        halted: ``--halt`` or ``--canary`` halted the run.
        not_deleted: ``--keep``: old images the run chose to delete and could not (1, as a
            failed job: the quota fills up if nobody looks).
    """
    if stopped_by in _SIGNAL_EXITS:
        return _SIGNAL_EXITS[stopped_by]
    if left_stopped:
        return EXIT_LEFT_STOPPED
    if fatal:
        return EXIT_FATAL
    if halted:
        return EXIT_HALTED
    failed = by_status.get(Status.FAILED.value, 0) + by_status.get(Status.UNKNOWN.value, 0)
    return EXIT_FAILED if failed or not_deleted else EXIT_OK


def segment_record(
    *,
    segment_id: str,
    started_at: float,
    now: float,
    calls: Mapping[str, int],
    codes: Mapping[str, int],
    retries: int,
    stopped_by: str | None = None,
    exit_code: int | None = None,
    power: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One process's counters, as checkpointed into the journal.

    Args:
        segment_id: the process's id within the run.
        started_at: Unix time it started.
        now: Unix time of the checkpoint.
        calls: API calls by action.
        codes: API answers by code (``OK`` for success).
        retries: retries scheduled.
        stopped_by: why it stopped, once known.
        exit_code: its exit code, once known (``None``: still running, or killed).
        power: ``--stop-running``: its power counters (see ``PowerLedger.segment``), which the
            summary sums over the run's processes.
    """
    return {
        "id": segment_id,
        "startedAt": rfc3339(started_at),
        "endedAt": rfc3339(now),
        "wallSeconds": round(max(0.0, now - started_at), 3),
        "apiCalls": {"total": sum(calls.values()), "byAction": dict(calls), "byCode": dict(codes)},
        "retries": retries,
        "stoppedBy": stopped_by,
        "exitCode": exit_code,
        **({"power": dict(power)} if power is not None else {}),
    }


def build_summary(
    *,
    header: RunHeader,
    out_dir: Path,
    jobs: int,
    by_status: Mapping[str, int],
    error_codes: Mapping[str, int],
    segments: Sequence[Mapping[str, Any]],
    stopped_by: str | None,
    stop_cause: ApiError | None,
    exit_code: int,
    throttle_decreases: int = 0,
    power: Mapping[str, Any] | None = None,
    images: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The run's ``summary.json``.

    Args:
        header: the run's header.
        out_dir: the run directory.
        jobs: jobs in the list.
        by_status: jobs by their latest status.
        error_codes: ended jobs by error code.
        segments: every segment's record, this process's last.
        stopped_by: why this process stopped early, if it did.
        stop_cause: the API error that stopped the run, if one did.
        exit_code: this process's exit code.
        throttle_decreases: times this process slowed down for 429s.
        power: with ``--stop-running``: instances stopped, started, peak stopped at once,
            downtime, ``instancesLeftStopped``.
        images: with ``--keep``: old images ``deleted``, images ``kept`` and images
            ``failedToDelete``, over the final results of the whole run.
    """
    ended = sum(by_status.get(s.value, 0) for s in Status if s.final)
    calls: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for segment in segments:
        api = segment.get("apiCalls") or {}
        calls.update(api.get("byAction") or {})
        codes.update(api.get("byCode") or {})
    return {
        "runId": header.run_id,
        "jobList": header.job_list,
        "outDir": str(out_dir),
        "startedAt": segments[0]["startedAt"] if segments else rfc3339(header.created_at),
        "endedAt": segments[-1]["endedAt"] if segments else rfc3339(header.created_at),
        "wallSeconds": round(sum(float(s.get("wallSeconds", 0.0)) for s in segments), 3),
        "jobs": jobs,
        "ended": ended,
        "pending": jobs - ended,
        "finished": ended >= jobs,
        "byStatus": {s.value: by_status.get(s.value, 0) for s in Status},
        "byErrorCode": dict(sorted(error_codes.items())),
        "apiCalls": {"total": sum(calls.values()), "byAction": dict(calls), "byCode": dict(codes)},
        "retries": sum(int(s.get("retries", 0)) for s in segments),
        "throttleDecreases": throttle_decreases,
        "segments": list(segments),
        "stoppedBy": stopped_by,
        "stopCause": None if stop_cause is None else {**stop_cause.to_record(), "action": stop_cause.action},
        "exitCode": exit_code,
        **({"power": dict(power)} if power is not None else {}),
        **({"images": dict(images)} if images is not None else {}),
    }
