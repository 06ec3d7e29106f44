"""What people read about a run: the progress line while it runs and the summary after.

Everything here renders from plain data, a :class:`~batch.run.Progress` snapshot or the
summary dict the run writes to ``summary.json``, and writes only to the stream it is given.
Summaries of older runs lack some keys, so every key is read with a default.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .run import Progress
from .text import clip

__all__ = ["ProgressPrinter", "advice_for", "format_seconds", "render_progress", "render_summary", "resume_command"]

#: exit codes after which the run can be continued (fatal stop, SIGINT, SIGTERM)
_RESUMABLE_EXIT_CODES = frozenset({3, 4, 5, 130, 143})
#: seconds between progress lines when the stream is a log, not a terminal
_LOG_INTERVAL = 10.0


def format_seconds(seconds: float) -> str:
    """A duration for people: ``3.5 s``, ``12 min 5 s``, ``2 h 03 min``.

    Args:
        seconds: the duration.
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def advice_for(code: str) -> str:
    """What to do before resuming a run stopped by an API error with this code.

    Args:
        code: the error code of the error that stopped the run.
    """
    if code == "AUTHFAILURE_SIGNATURE_EXPIRED":
        return "fix this machine's clock: it is more than 5 minutes off the API's, so signatures expire"
    if code == "AUTHFAILURE_UNAUTHORIZED_OPERATION":
        return "fix the credentials: the key may not call this action; grant it CreateImage and DescribeCustomImages"
    if code.startswith("AUTHFAILURE"):
        return (
            "fix the credentials (ZENLAYER_TOKEN, or ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_SECRET, "
            "or ZENLAYERCLOUD_ACCESS_KEY_ID and ZENLAYERCLOUD_ACCESS_KEY_PASSWORD)"
        )
    if code == "INVALID_IMAGE_QUOTA_EXCEED":
        return "raise the custom-image quota (ask Zenlayer support) or delete images you no longer need"
    return "check the endpoint (--endpoint or ZENLAYER_ENDPOINT) and whether the API is up"


def resume_command(out_dir: str | Path) -> str:
    """The exact command that continues the run in ``out_dir``, quoted for a POSIX shell.

    Args:
        out_dir: the run directory, as the run was given it.
    """
    return f"imagebatch run --out {shlex.quote(str(out_dir))} --resume"


class ProgressPrinter:
    """Prints progress: one rewritten line on a terminal; in a log, a line every 10 s and on
    every change of phase (so a cron log shows when the listing ended and the run began).

    Args:
        stream: where to write (default: stderr, so stdout keeps only the summary).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1e9
        self._phase = ""
        self._open = False  # a terminal line is written and not yet ended with a newline

    def __call__(self, p: Progress) -> None:
        """Show one snapshot (called about once a second and at the end)."""
        changed = p.phase != self._phase
        self._phase = p.phase
        if not self.tty and not changed and p.elapsed - self._last < _LOG_INTERVAL:
            return
        self._last = p.elapsed
        line = render_progress(p)
        if self.tty:
            # A line wider than the terminal wraps, and "\r" would then rewrite only its tail.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\x1b[2K" + line[:width])
            self._open = True
            if p.phase == "ended" or sum(p.by_status.values()) >= p.total > 0:
                self.finish()
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the terminal line, so that what is printed next starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def render_progress(p: Progress) -> str:
    """One progress line.

    Args:
        p: the snapshot.
    """
    head = f"[{p.elapsed:6.1f}s]"
    if p.phase in ("starting", "listing"):
        what = "listing existing images" if p.phase == "listing" else "starting"
        detail = f": {p.phase_detail}" if p.phase_detail else ""
        return f"{head} {what}{detail} | {p.api_calls} calls"
    s = p.by_status
    ended = sum(s.values())
    counts = [f"ok {s.get('succeeded', 0)}", f"failed {s.get('failed', 0)}", f"skipped {s.get('skipped', 0)}"]
    counts += [f"{k} {s[k]}" for k in ("unknown", "interrupted") if s.get(k)]
    # Jobs whose image is awaited hold no request: show them apart from the requests, which
    # --concurrency bounds (otherwise "in flight 93" at --concurrency 8 looks like a bug).
    flight = f"requests in flight {p.requests_in_flight}, retrying {p.waiting}"
    if p.awaiting_images:
        flight += f", images awaited {p.awaiting_images}"
    if p.power:
        w = p.power
        flight += (
            f" | power: down {w.get('down', 0)}, queued {w.get('queued', 0)}, "
            f"stopping/starting {w.get('stopping', 0)}/{w.get('starting', 0)}, waiting on states {w.get('awaiting', 0)}"
        )
    state = ""
    if p.phase == "restoring power":
        state = " restoring power: starting the instances this run stopped |"
    if p.phase == "draining":
        state = " stopping, finishing what is in flight" + (f" ({p.phase_detail})" if p.phase_detail else "") + " |"
    return (
        f"{head}{state} {ended}/{p.total} ended ({', '.join(counts)}) | {flight} | "
        f"{p.api_calls} calls, pacing {p.rate:.1f}/s"
    )


def _headline(s: Mapping[str, Any]) -> str:
    jobs, ended = s.get("jobs", 0), s.get("ended")
    if ended is None:  # a summary from before "ended" was written
        ended = jobs - s.get("pending", 0)
    line = f"run {s.get('runId')}: {ended} of {jobs} ended in {format_seconds(float(s.get('wallSeconds') or 0))}"
    segments = s.get("segments") or []
    if len(segments) > 1:
        line += f" over {len(segments)} segments"
    return line


def _plain(text: object) -> str:
    """Text from outside for one console line: control characters escaped, cut at 80."""
    shown = str(text)
    if not shown.isprintable():
        shown = shown.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 80 else shown[:80] + "…"


def _power_lines(power: Any) -> list[str]:
    """``--stop-running``: stopped, started, peak down at once, downtime, and what is left stopped."""
    if not isinstance(power, Mapping):
        return []
    peak = f"peak down {power.get('peakStopped')} of {power.get('maxStopped')}, " if power.get("maxStopped") else ""
    lines = [
        f"  power      stopped {power.get('instancesStopped', 0)}, started {power.get('instancesStarted', 0)}, "
        f"forced {power.get('forcedStops', 0)}, {peak}"
        f"downtime {format_seconds(float(power.get('downtimeSecondsTotal') or 0))} in all, "
        f"longest {format_seconds(float(power.get('downtimeSecondsLongest') or 0))}"
    ]
    gone = power.get("instancesGone") or {}
    if gone:
        shown = ", ".join(f"{clip(i, 40)} ({_plain(state)})" for i, state in list(gone.items())[:10])
        lines.append(f"  gone       {len(gone)} instance(s) this run stopped no longer exist or are recycled: {shown}")
    left = list(power.get("instancesLeftStopped") or [])
    if left and not power.get("leftStoppedOnPurpose"):
        shown = ", ".join(clip(i, 40) for i in left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
        lines.append(f"  NOT RUNNING {len(left)} instance(s) this run stopped: {shown}")
    elif left:
        lines.append(f"  left stopped (--leave-stopped): {len(left)}")
    return lines


def _stop_lines(s: Mapping[str, Any], out_dir: str | Path | None, resumable: bool) -> list[str]:
    """Why the run stopped, what to do, and the command that resumes it."""
    stopped_by = str(s.get("stoppedBy") or "")
    cause = s.get("stopCause") or {}
    lines = []
    todo = ""
    if cause:
        code = str(cause.get("code") or "UNKNOWN")
        where = [str(cause["action"])] if cause.get("action") else []
        where += [f"HTTP {cause['status']}"] if cause.get("status") else []
        where += [f"request id {clip(cause['requestId'], 64)}"] if cause.get("requestId") else []
        detail = f" ({', '.join(where)})" if where else ""
        lines.append(f"cause:     {code}: {clip(cause.get('message') or '', 400)}{detail}")
        todo = advice_for(code) + "; then"
    elif stopped_by.startswith("fatal:"):
        todo = advice_for(stopped_by.removeprefix("fatal:")) + "; then"
    elif stopped_by.startswith("halt:"):
        lines.append(f"halted:    {_plain(stopped_by.removeprefix('halt:').strip())}")
        todo = (
            f"look at the failures (imagebatch report {shlex.quote(str(out_dir or 'RUN_DIR'))}); "
            f"the {s.get('pending', 0)} jobs not started run when you"
        )
    elif stopped_by in ("SIGINT", "SIGTERM"):
        todo = f"{s.get('pending', 0)} of {s.get('jobs', 0)} jobs did not end;"
    elif stopped_by:
        todo = "keep the job list unchanged while a run reads it; then"
    elif s.get("exitCode") == 5:
        todo = "instances this run stopped are not RUNNING again: start them (--resume does, first);"
    if resumable and out_dir is not None and s.get("exitCode") in _RESUMABLE_EXIT_CODES:
        lines.append(f"to do:     {todo} resume with:" if todo else "to do:     resume with:")
        lines.append(f"  {resume_command(out_dir)}")
    elif todo:
        lines.append(f"to do:     {todo.removesuffix('; then').removesuffix(';')}")
    return lines


def render_summary(summary: Mapping[str, Any], *, out_dir: str | Path | None = None, resumable: bool = True) -> str:
    """The end-of-run text: counts, calls, where the results are, the exit code and, after a
    stop, its cause, what to do and the exact command that resumes the run.

    Args:
        summary: the run's summary (the ``summary.json`` dict); missing keys count as empty.
        out_dir: the run directory (default: the summary's ``outDir``).
        resumable: print the resume command after a stop (the demo's runs cannot be resumed).
    """
    s = summary
    if out_dir is None:
        out_dir = s.get("outDir")
    by_status = s.get("byStatus") or {}
    # Codes come from the API: escaped, so a hostile one cannot drive the terminal.
    codes = ", ".join(f"{_plain(c)} {n}" for c, n in (s.get("byErrorCode") or {}).items())
    calls = s.get("apiCalls") or {}
    rows = [
        _headline(s),
        f"  succeeded  {by_status.get('succeeded', 0):>7}",
        f"  failed     {by_status.get('failed', 0):>7}" + (f"   (errors: {codes})" if codes else ""),
        f"  skipped    {by_status.get('skipped', 0):>7}",
    ]
    # Shown only when there are some: they are rare, and each needs a word of explanation.
    if by_status.get("unknown"):
        rows.append(f"  unknown    {by_status['unknown']:>7}   (answer lost; --resume looks them up again)")
    if by_status.get("interrupted"):
        rows.append(f"  interrupted{by_status['interrupted']:>7}   (stopped mid-job; --resume retries them)")
    rows += [
        f"  pending    {s.get('pending', 0):>7}",
        f"  API calls  {calls.get('total', 0):>7}   retries {s.get('retries', 0)}, "
        f"429s {(calls.get('byCode') or {}).get('REQUEST_LIMIT_EXCEEDED', 0)}",
    ]
    rows += _power_lines(s.get("power"))
    if out_dir is not None:
        rows.append(f"results:   {Path(out_dir) / 'results.jsonl'}")
    stopped = f" (stopped by {s['stoppedBy']})" if s.get("stoppedBy") else ""
    rows.append(f"exit code: {s.get('exitCode')}{stopped}")
    rows += _stop_lines(s, out_dir, resumable)
    return "\n".join(rows)
