"""``imagebatch report``'s table (a terminal) and Markdown (a ticket, a wiki page) renderings.

Both draw the same sections from the report built by :func:`batch.runreport.build_report`;
only the drawing differs. Long lists are cut with how many were left out (``--output json``
has them all).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .output import cell
from .report import format_seconds
from .runreport import NOT_RECORDED

__all__ = ["render_markdown", "render_table"]

#: rows of one section shown before "… and N more"
_ROWS = 20
#: instance ids shown per failure code
_IDS = 5
#: longest id (instance, request) or code kept in a cell; the API's text may be any length
_ID_LIMIT = 48


@dataclass
class _Section:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def _seconds(value: Any) -> str:
    return NOT_RECORDED if value is None else format_seconds(float(value))


def _id(value: Any) -> str:
    """An id or code from the API or the job list: escaped, and cut at :data:`_ID_LIMIT`."""
    return cell(value, _ID_LIMIT)


def _counts(mapping: Mapping[str, Any]) -> str:
    ordered = sorted(mapping.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    return ", ".join(f"{_id(k)} {v}" for k, v in ordered) or "none"


def _cut(rows: list[list[str]], total: int, width: int) -> list[list[str]]:
    if total > len(rows):
        rows.append([f"… and {total - len(rows)} more", *[""] * (width - 1)])
    return rows


def _sections(report: Mapping[str, Any]) -> list[_Section]:
    jobs = report["jobs"]
    overview = _Section("run", ["", ""])
    overview.rows = [
        ["run id", _id(report["runId"])],
        ["state", cell(report["state"])],
        ["processes", str(report["processes"])],
        ["jobs", "not recorded (no job-list copy)" if jobs["total"] is None else str(jobs["total"])],
        *[[status, str(jobs[status])] for status in ("succeeded", "failed", "skipped", "unknown", "interrupted")],
        ["not ended", NOT_RECORDED if jobs["notEnded"] is None else str(jobs["notEnded"])],
        ["sent, no result", str(jobs["sentWithoutResult"])],
        ["retries", f"{report['retries']['total']} ({_counts(report['retries']['byCode'])})"],
        ["API calls", f"{report['apiCalls']['total']} ({_counts(report['apiCalls']['byAction'])})"],
    ]
    failures = _Section("failures by code", ["code", "jobs", "instances (request id)"])
    for group in report["failures"][:_ROWS]:
        shown = [f"{_id(j['instanceId'])} ({_id(j['requestId'] or 'no answer')})" for j in group["jobs"][:_IDS]]
        more = f", … and {group['count'] - _IDS} more" if group["count"] > _IDS else ""
        failures.rows.append([_id(group["code"]), str(group["count"]), ", ".join(shown) + more])
    _cut(failures.rows, len(report["failures"]), 3)
    time = report["time"]
    timing = _Section("where the time went", ["", "seconds", "what it counts"])
    timing.rows = [["wall time", _seconds(time["wallSeconds"]), "every process of the run, added up"]]
    for label, key in (
        ("API", "apiSeconds"),
        ("rate limiter", "limiterWaitSeconds"),
        ("back-off", "backoffSeconds"),
        ("instance states", "instanceStateWaitSeconds"),
        ("image states", "imageStateWaitSeconds"),
    ):
        timing.rows.append([label, _seconds(time[key]["seconds"]), time[key]["note"]])
    slow = _Section("slowest jobs", ["instance", "status", "seconds", "attempts"])
    slow.rows = [
        [_id(j["instanceId"]), _id(j["status"]), f"{j['seconds']:.3f}", _id(j["attempts"])]
        for j in report["slowestJobs"]
    ]
    sections = [overview, failures, timing, slow]
    downtime = report["downtime"]
    if downtime is not None:
        down = _Section("downtime per instance", ["instance", "seconds", "actions", "final state"])
        down.rows = [
            [_id(d["instanceId"]), f"{d['seconds']:.3f}", cell(",".join(map(str, d["actions"]))), _id(d["finalState"])]
            for d in downtime["instances"][:_ROWS]
        ]
        _cut(down.rows, len(downtime["instances"]), 4)
        left = downtime["notSeenRunningAgain"]
        down.note = f"{downtime['stoppedByRun']} stopped by the run, {downtime['totalSeconds']:.3f} s down in all" + (
            f"; not seen RUNNING again: {', '.join(_id(i) for i in left[:_ROWS])}" if left else ""
        )
        sections.append(down)
    sections[0].rows += _damage_rows(report)
    return sections


def _damage_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """What the report could not read: a missing or unreadable journal, damaged records and event lines."""
    journal = report["journal"]
    rows = []
    if journal.get("problem"):
        rows.append(["journal", f"WARNING: {cell(journal['problem'], 200)}"])
    if journal["tornRecords"] or journal["damagedRecords"]:
        rows.append(
            [
                "journal",
                f"{journal['tornRecords']} record(s) failed their checksum and were skipped, "
                f"of which {journal['damagedRecords']} damaged (followed by good records: not a crash's torn tail)",
            ]
        )
    damaged_events = report["events"]["damagedLines"]
    if damaged_events:
        what = "line(s) of events.jsonl skipped: not JSON, or holding a non-finite number"
        rows.append(["events", f"{damaged_events} {what}"])
    return rows


def _plain(text: str) -> str:
    """Every cell once more through :func:`~batch.output.cell`, uncut: nothing raw reaches the terminal."""
    return cell(text, sys.maxsize)


def _widths(section: _Section) -> list[int]:
    cells = [section.header, *section.rows]
    return [max(len(row[i]) for row in cells) for i in range(len(section.header))]


def render_table(report: Mapping[str, Any]) -> str:
    """The report as aligned plain text.

    Args:
        report: from :func:`batch.runreport.build_report`.
    """
    out: list[str] = []
    for section in _sections(report):
        section.rows = [[_plain(c) for c in row] for row in section.rows]
        out.append(section.title)
        widths = _widths(section)
        rows: Sequence[list[str]] = section.rows if not any(section.header) else [section.header, *section.rows]
        if not section.rows:
            out.append("  none")
        else:
            out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        if section.note:
            out.append(f"  {_plain(section.note)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md(text: str) -> str:
    # escaped first: a newline would end the row, and the next line would be read as rows of its own
    return _plain(text).replace("|", "\\|")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: a heading and a table per section.

    Args:
        report: from :func:`batch.runreport.build_report`.
    """
    out = [f"# imagebatch run {_md(_id(report['runId']))}", ""]
    for section in _sections(report):
        out += [f"## {section.title}", ""]
        if not section.rows:
            out += ["none", ""]
            continue
        header = [h or " " for h in section.header]
        out.append("| " + " | ".join(_md(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in section.rows]
        if section.note:
            out += ["", _md(section.note)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"
