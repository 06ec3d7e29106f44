"""``imagebatch report RUN_DIR``: what happened in a run, from its files alone.

Works on a finished run, one stopped early (signal, fatal error) and one killed with ``kill -9``:
the journal, read with :func:`batch.journal.read_journal` (which skips a torn last record), says
how each job ended and holds each process's API counters (checkpointed with every group of
records); ``events.jsonl`` gives the times; the run's copy of its job list gives the job count.
A figure that no file records is reported as not recorded, never guessed.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RunDirectoryError
from .header import RunHeader
from .journal import EVENTS_FILE, JOURNAL_FILE, RUN_FILE, JournalState, RunDirectory, read_journal
from .listcopy import ListCopy
from .models import Status

__all__ = ["NOT_RECORDED", "RunFiles", "build_report", "check_copy", "failed_instance_ids", "open_run"]

NOT_RECORDED = "not recorded"
#: statuses whose jobs are failures to report (``unknown``: the image may or may not exist)
_FAILURE_STATUSES = frozenset({Status.FAILED.value, Status.UNKNOWN.value})
_WAIT_NOT_LOGGED = "the run logs no event when a job starts or stops waiting for {}"


@dataclass
class RunFiles:
    """A run directory's header, journal and job-list copy, read once."""

    path: Path
    header: RunHeader
    journal: JournalState
    copy: ListCopy | None = None
    ids: list[str] = field(default_factory=list)
    #: why the journal tells nothing (missing, empty, unreadable, no good record), or ``None``
    journal_problem: str | None = None


def open_run(path: Path) -> RunFiles:
    """Read a run directory (never writes to it, never takes its lock).

    Args:
        path: the run directory.

    Raises:
        RunDirectoryError: it is not a run directory, or its ``run.json`` cannot be read.
    """
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise RunDirectoryError(f"{path} {what}; give the run directory (a run's --out)")
    if not (path / RUN_FILE).is_file():
        raise RunDirectoryError(f"{path} is not a run directory: it has no {RUN_FILE}")
    header = RunDirectory(path).read_header()
    journal_path = path / JOURNAL_FILE
    try:
        journal = read_journal(journal_path)
        problem = _journal_problem(journal_path, journal)
    except OSError as exc:
        journal, problem = JournalState(), f"{JOURNAL_FILE} cannot be read: {exc.strerror or exc}"
    files = RunFiles(path, header, journal, journal_problem=problem)
    if header.snapshot and header.fmt and (path / header.snapshot).is_file():
        files.copy = ListCopy(path / header.snapshot, header.fmt)
        files.ids = list(files.copy.instance_ids())
    return files


def _journal_problem(path: Path, journal: JournalState) -> str | None:
    """Why the journal says nothing of the run, or ``None`` when it holds records."""
    if not path.exists():
        return f"the run directory has no {JOURNAL_FILE}: no job's outcome is recorded"
    if not path.is_file():
        return f"{JOURNAL_FILE} is not a regular file: no job's outcome is recorded"
    if any((journal.intents, journal.results, journal.segments, journal.stopped, journal.deleting)):
        return None
    if journal.torn:
        return f"{JOURNAL_FILE} holds no readable record ({journal.torn} damaged): no job's outcome is recorded"
    return f"{JOURNAL_FILE} is empty: no job's outcome is recorded"


def _finite(text: str) -> float:
    """``parse_float`` and ``parse_constant`` of the events: a non-finite number damages its line."""
    number = float(text)
    if not math.isfinite(number):
        msg = f"not a finite number: {text[:20]}"
        raise ValueError(msg)
    return number


@dataclass
class _Events:
    """The figures the report takes from ``events.jsonl``, read in one pass."""

    present: bool = False
    api: float = 0.0
    limiter: float = 0.0
    backoff: float = 0.0
    retry_codes: Counter[str] = field(default_factory=Counter)
    #: lines skipped: not JSON (a crash cuts the last one short), or NaN/Infinity in them
    damaged: int = 0


def _read_events(path: Path) -> _Events:
    figures = _Events(present=path.is_file())
    if not figures.present:
        return figures
    for event in _events(path, figures):
        if event.get("event") == "api.attempt":
            figures.api += _number(event.get("apiSeconds"))
            figures.limiter += _number(event.get("limiterWaitSeconds"))
        elif event.get("event") == "job.retry_scheduled":
            figures.backoff += _number(event.get("backoffSeconds"))
            figures.retry_codes[str(event.get("code"))] += 1
    return figures


def _events(path: Path, figures: _Events) -> Iterator[dict[str, Any]]:
    """The run's events; a line that does not parse (cut short by a crash, or holding a non-finite
    number, which no JSON reader takes) is skipped and counted."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line, parse_float=_finite, parse_constant=_finite)
                except (ValueError, RecursionError):
                    figures.damaged += 1
                    continue
                if isinstance(event, dict):
                    yield event
                else:
                    figures.damaged += 1
    except OSError:
        figures.damaged += 1


def _number(value: Any) -> float:
    """A figure from a run's file; anything but a finite number counts as nothing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else 0.0
    return 0.0


def _timing(wall: float, events: _Events) -> dict[str, Any]:
    if not events.present:
        absent = {"seconds": None, "note": f"the run directory has no {EVENTS_FILE}"}
        figures = ("apiSeconds", "limiterWaitSeconds", "backoffSeconds", "instanceStateWaitSeconds")
        return {"wallSeconds": wall, **{k: absent for k in (*figures, "imageStateWaitSeconds")}}
    api, limiter, backoff = events.api, events.limiter, events.backoff
    return {
        "wallSeconds": wall,
        "apiSeconds": {
            "seconds": round(api, 3),
            "note": "every request's time to its answer, added up (requests overlap under --concurrency)",
        },
        "limiterWaitSeconds": {
            "seconds": round(limiter, 3),
            "note": "per-job calls only (CreateImage, look-ups by name); batched calls (Stop/Start/"
            "DescribeInstancesStatus) and the image listing are not recorded",
        },
        "backoffSeconds": {
            "seconds": round(backoff, 3),
            "note": "back-off scheduled after errors (job.retry_scheduled); the image listing's is not recorded",
        },
        "instanceStateWaitSeconds": {"seconds": None, "note": _WAIT_NOT_LOGGED.format("an instance state")},
        "imageStateWaitSeconds": {"seconds": None, "note": _WAIT_NOT_LOGGED.format("an image state (--wait)")},
    }


def _failures(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for instance_id, result in results.items():
        if result.get("status") not in _FAILURE_STATUSES:
            continue
        raw = result.get("error")
        error: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        by_code[str(error.get("code") or "(no code)")].append(
            {
                "instanceId": instance_id,
                "status": result.get("status"),
                "message": error.get("message"),
                "requestId": error.get("requestId"),
                "requestIds": list(result.get("requestIds") or []),
                "reason": result.get("reason"),
            }
        )
    ordered = sorted(by_code.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{"code": code, "count": len(jobs), "jobs": jobs} for code, jobs in ordered]


def _slowest(results: Mapping[str, Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    timed = [(_number(r.get("durationSeconds")), i, r) for i, r in results.items()]
    timed.sort(key=lambda item: (-item[0], item[1]))
    return [
        {"instanceId": i, "status": r.get("status"), "seconds": round(s, 3), "attempts": r.get("attempts")}
        for s, i, r in timed[:count]
    ]


def _downtime(files: RunFiles) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = []
    for instance_id, result in files.journal.results.items():
        power = result.get("power")
        if isinstance(power, dict) and power.get("downtimeSeconds") is not None:
            rows.append(
                {
                    "instanceId": instance_id,
                    "seconds": _number(power.get("downtimeSeconds")),
                    "actions": list(power.get("actions") or []),
                    "finalState": power.get("finalState"),
                }
            )
    left = sorted(files.journal.stopped - files.journal.started)
    if not rows and not files.journal.stopped:
        return None  # not a --stop-running run: nothing was powered off
    rows.sort(key=lambda row: (-float(row["seconds"]), str(row["instanceId"])))
    return {
        "instances": rows,
        "totalSeconds": round(sum(float(row["seconds"]) for row in rows), 3),
        "stoppedByRun": len(files.journal.stopped),
        # The journal says StopInstances was sent and never that the instance ran again.
        "notSeenRunningAgain": left,
    }


def build_report(files: RunFiles, *, slowest: int = 10) -> dict[str, Any]:
    """The report as plain JSON values (``--output json`` prints it as it is).

    Args:
        files: the run, from :func:`open_run`.
        slowest: how many of the slowest jobs to list.
    """
    journal = files.journal
    results = journal.results
    by_status = Counter(str(r.get("status")) for r in results.values())
    total = len(files.ids) if files.copy is not None else None
    segments = list(journal.segments.values())
    last = segments[-1] if segments else {}
    finals = sum(by_status.get(s.value, 0) for s in Status if s.final)
    if total is not None and finals >= total:
        state = "finished"
    elif last.get("exitCode") is not None:
        state = "stopped"
    else:
        state = "ended without a final record (killed, or still running)"
    calls: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for segment in segments:
        api = segment.get("apiCalls")
        if not isinstance(api, dict):
            continue
        calls.update(api.get("byAction") or {})
        codes.update(api.get("byCode") or {})
    events = _read_events(files.path / EVENTS_FILE)
    wall = round(sum(_number(s.get("wallSeconds")) for s in segments), 3)
    ended = set(results)
    return {
        "runId": files.header.run_id,
        "runDir": str(files.path),
        "jobList": files.header.job_list,
        "state": state,
        "stoppedBy": last.get("stoppedBy"),
        "exitCode": last.get("exitCode"),
        "processes": len(segments),
        "jobs": {
            "total": total,
            **{s.value: by_status.get(s.value, 0) for s in Status},
            "notEnded": None if total is None else sum(1 for i in files.ids if i not in ended),
            # An intent is durable before its CreateImage is sent: these may have an image.
            "sentWithoutResult": sum(1 for i in journal.intents if i not in ended),
        },
        "failures": _failures(results),
        "retries": {"total": sum(int(_number(s.get("retries"))) for s in segments), "byCode": dict(events.retry_codes)},
        "apiCalls": {"total": sum(calls.values()), "byAction": dict(calls), "byCode": dict(codes)},
        "time": _timing(wall, events),
        "slowestJobs": _slowest(results, slowest),
        "downtime": _downtime(files),
        "journal": {
            "tornRecords": journal.torn,
            "damagedRecords": len(journal.corrupt_offsets),
            "problem": files.journal_problem,
        },
        "events": {"damagedLines": events.damaged},
    }


def failed_instance_ids(files: RunFiles) -> set[str]:
    """The instances whose job ended ``failed`` (``unknown`` and ``interrupted`` ones are for ``--resume``).

    Args:
        files: the run.
    """
    return {i for i, r in files.journal.results.items() if r.get("status") == Status.FAILED.value}


def check_copy(files: RunFiles) -> ListCopy:
    """The run's copy of its job list, or a clear error when it kept none.

    Args:
        files: the run.
    """
    if files.copy is None:
        raise RunDirectoryError(f"{files.path}: the run kept no copy of its job list; --failed-jobs needs one")
    return files.copy
