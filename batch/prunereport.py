"""What ``imagebatch prune`` shows and writes: the plan table, result lines, and the summary's image totals."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .header import RunHeader
from .models import Status
from .retention import InstancePlan, RetentionPlan
from .text import rfc3339

__all__ = ["image_totals", "instance_record", "prune_summary", "render_plan", "resume_prune_command"]


def _why(plan: InstancePlan) -> str:
    if plan.note is not None:
        return plan.note
    if not plan.decisions:
        return "no images of the policy"
    counts = Counter(d.reason for d in plan.decisions)
    return "; ".join(f"{n} {reason}" for reason, n in counts.items())


def render_plan(plan: RetentionPlan, *, scope: Iterable[str], missing: Iterable[str] = ()) -> str:
    """The plan as a table: instance, kept, deleted (ids), why; then what is left alone.

    Args:
        plan: the plan.
        scope: the instances this prune acts on (the job list's, and orphans with ``--orphans``).
        missing: instances of the job list with no image of the policy.
    """
    in_scope = set(scope)
    shown = [p for p in plan.instances if p.instance_id in in_scope]
    rows = [("instance", "kept", "deleted", "why")]
    for p in shown:
        rows.append((p.instance_id, str(len(p.kept)), " ".join(d.image.image_id for d in p.deleted) or "-", _why(p)))
    rows += [(i, "0", "-", "no images of the policy") for i in sorted(missing)]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join([*(r[c].ljust(widths[c]) for c in range(3)), r[3]]).rstrip() for r in rows]
    outside = [p for p in plan.instances if p.instance_id not in in_scope]
    if outside:
        held = sum(len(p.decisions) for p in outside)
        left = f"{len(outside)} instance(s) not in the job list left alone ({held} image(s))"
        lines.append(f"{left}; --orphans prunes them")
    if plan.unattributed:
        lines.append(f"{len(plan.unattributed)} image(s) of the policy without an imagebatch-instance tag left alone")
    deleting = len(plan.deleting)
    if deleting:
        lines.append(f"{deleting} image(s) of the policy already DELETING")
    return "\n".join(lines)


def instance_record(
    instance_id: str,
    *,
    plan: InstancePlan | None,
    pruned: Sequence[str],
    failed: Mapping[str, Mapping[str, Any]],
    line: int | None,
    started_at: float,
    ended_at: float,
    status: Status | None = None,
) -> dict[str, Any]:
    """One instance's ``results.jsonl`` line.

    Args:
        instance_id: the instance.
        plan: its plan (``None``: it has no image of the policy).
        pruned: ids deleted (DeleteImages accepted, or found gone or DELETING).
        failed: ids that could not be deleted, each with its last error.
        line: its line in the job list (``None`` for an orphan).
        started_at: Unix time its work started.
        ended_at: Unix time it ended.
        status: overrides the status (``interrupted`` when the prune stopped before it ended).
    """
    decisions = plan.decisions if plan is not None else ()
    if status is None:
        status = Status.FAILED if failed else Status.SUCCEEDED
    errors = [{"imageId": i, **dict(e)} for i, e in failed.items()]
    return {
        "instanceId": instance_id,
        "status": status.value,
        "keptImageIds": [d.image.image_id for d in decisions if not d.delete],
        "prunedImageIds": list(pruned),
        "failedImageIds": list(failed),
        "why": {d.image.image_id: d.reason for d in decisions},
        "note": plan.note if plan is not None else None,
        "error": errors[0] if errors else None,
        "errors": errors,
        "startedAt": rfc3339(started_at),
        "endedAt": rfc3339(ended_at),
        "line": line,
    }


def image_totals(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``summary.json``'s ``images``: deleted, kept and failed to delete, over every result line.

    Args:
        results: the run's result lines.
    """
    totals = {"deleted": 0, "kept": 0, "failedToDelete": 0}
    for result in results:
        totals["deleted"] += len(result.get("prunedImageIds") or ())
        totals["kept"] += len(result.get("keptImageIds") or ())
        totals["failedToDelete"] += len(result.get("failedImageIds") or ())
    return totals


def prune_summary(
    *,
    header: RunHeader,
    settings: Mapping[str, Any],
    out_dir: Path,
    results: Sequence[Mapping[str, Any]],
    segments: Sequence[Mapping[str, Any]],
    stopped_by: str | None,
    exit_code: int | None,
) -> dict[str, Any]:
    """A prune's ``summary.json``, over every process that worked on it.

    Args:
        header: the prune's ``run.json``.
        settings: its settings (:meth:`batch.prune.PruneSettings.to_record`).
        out_dir: the run directory.
        results: every instance's last result line.
        segments: every process's last checkpoint, in order.
        stopped_by: why this process stopped early, if it did.
        exit_code: this process's exit code.
    """
    calls: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for segment in segments:
        api = segment.get("apiCalls") or {}
        calls.update(api.get("byAction") or {})
        codes.update(api.get("byCode") or {})
    by_status = Counter(str(r.get("status")) for r in results)
    return {
        "command": "prune",
        "runId": header.run_id,
        "jobList": header.job_list,
        "outDir": str(out_dir),
        "policy": settings.get("policy"),
        "keep": settings.get("keep"),
        "maxAgeDays": settings.get("max_age_days"),
        "orphans": settings.get("orphans"),
        "pruneFailed": settings.get("prune_failed"),
        "now": rfc3339(header.date),
        "startedAt": segments[0]["startedAt"] if segments else rfc3339(header.created_at),
        "endedAt": segments[-1]["endedAt"] if segments else rfc3339(header.created_at),
        "wallSeconds": round(sum(float(s.get("wallSeconds", 0.0)) for s in segments), 3),
        "instances": len(results),
        "byStatus": {s.value: by_status.get(s.value, 0) for s in Status},
        "images": image_totals(results),
        "apiCalls": {"total": sum(calls.values()), "byAction": dict(calls), "byCode": dict(codes)},
        "retries": sum(int(s.get("retries", 0)) for s in segments),
        "segments": list(segments),
        "stoppedBy": stopped_by,
        "exitCode": exit_code,
    }


def resume_prune_command(out_dir: Path) -> str:
    """The command that continues the prune in ``out_dir``, quoted for a POSIX shell.

    Args:
        out_dir: the run directory.
    """
    return f"imagebatch prune --out {shlex.quote(str(out_dir))} --resume"
