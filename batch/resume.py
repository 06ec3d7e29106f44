"""Opening a run directory: start a new run, or put a stopped one back where it was.

A new run copies its job list into the run directory (:mod:`batch.snapshot`), validates the
copy, and writes ``run.json`` with its effective options. A resumed run reads ``run.json``,
combines its options with the flags given again (:func:`batch.options.resume_options`), checks a
job list given again against the copy, and reads the journal: jobs that ended for good stay
ended; jobs whose last result is not final (``unknown``, ``interrupted``) and jobs never ended
run again, those that may have sent CreateImage looking their image up first.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import RunDirectoryError, UsageError
from .header import RunHeader, new_run_id
from .journal import JOURNAL_FILE, RunDirectory, compact_journal, read_journal, rebuild_results
from .options import RunOptions, resume_options
from .snapshot import JobSource, file_sha256, list_differences, same_bytes, snapshot_name, take_snapshot
from .sources import JobList, Validation, detect_format

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A run directory opened for one process: what to run and what is already done."""

    header: RunHeader
    options: RunOptions
    jobs: JobList
    validation: Validation
    resumed: bool = False
    #: instance id -> image name of every job that may have sent CreateImage
    intents: dict[str, str] = field(default_factory=dict)
    #: jobs of the list that ended for good
    done_ids: set[str] = field(default_factory=set)
    by_status: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    #: earlier processes' last checkpoints, in order
    segments: list[dict[str, Any]] = field(default_factory=list)
    #: instances an earlier process stopped (``--stop-running``) and never saw RUNNING again
    owed_starts: list[str] = field(default_factory=list)
    #: ``--stop-running``: what earlier processes did to the instance of each job not ended for
    #: good (the ``power`` object of its last result line, else what the journal's stop and
    #: started records say), carried into the job's result
    power_history: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Every job of the list ended for good."""
        return len(self.done_ids) >= self.validation.jobs


def prepare(
    directory: RunDirectory,
    source: JobSource | None,
    requested: RunOptions,
    *,
    explicit: Collection[str],
    endpoint: str,
    notice: Callable[[str], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Prepared:
    """Open (and lock) the run directory for a new run or a resume.

    Args:
        directory: the run directory (locked here).
        source: the job list given on the command line (``None``: resume from the copy).
        requested: the options of this process.
        explicit: names of the options given on this command line.
        endpoint: the API base URL.
        notice: called with each line worth telling the user on stderr.
        now: the clock of the run's start time.

    Raises:
        RunDirectoryError: the directory is locked, holds a run without ``--resume``, or its
            run cannot be resumed as asked.
        UsageError: no job list for a new run, an unreadable list or a bad option.
        JobListError: the job list does not validate.
    """
    directory.lock()
    if directory.exists:
        if not requested.resume:
            msg = (
                f"run directory {directory.path} already holds a run; pass --resume to continue it, "
                "or choose a new --out"
            )
            raise RunDirectoryError(msg)
        return _resume(directory, source, requested, explicit, notice)
    if source is None:
        msg = f"run directory {directory.path} holds no run to resume; give the JOBLIST to start one"
        raise UsageError(msg)
    return _start(directory, source, requested, endpoint, now())


def _start(directory: RunDirectory, source: JobSource, options: RunOptions, endpoint: str, now: datetime) -> Prepared:
    options.check()
    fmt = detect_format(Path(source.suffix_name), options.fmt, display=source.label)
    options = replace(options, fmt=fmt)
    name = snapshot_name(fmt)
    copy = directory.file(name)
    sha256 = take_snapshot(source, copy)
    header = RunHeader(
        run_id=new_run_id(now),
        created_at=now,
        date=now,
        job_list=source.display,
        snapshot=name,
        fmt=fmt,
        name_template=options.name_template,
        endpoint=endpoint,
        options=options.to_record(),
        snapshot_sha256=sha256,
    )
    try:
        jobs = _job_list(copy, header, source.label)
        validation = jobs.check()
        directory.write_header(header)
    except BaseException:
        # No run started: leave no copy behind (the directory is removed if this run made it).
        with contextlib.suppress(OSError):
            copy.unlink()
        raise
    return Prepared(header, options, jobs, validation)


def _resume(
    directory: RunDirectory,
    source: JobSource | None,
    requested: RunOptions,
    explicit: Collection[str],
    notice: Callable[[str], None],
) -> Prepared:
    header = directory.read_header()
    options, changed = resume_options(header.options, requested, explicit)
    options.check()
    for line in changed:
        notice(f"this resume changes {line}")
    if header.snapshot is None:
        # A run of version 1 read its list from where the user kept it.
        path = source.path if source is not None and source.path is not None else Path(header.job_list)
        jobs = _job_list(path, header, str(path))
    else:
        copy = directory.file(header.snapshot)
        if not copy.is_file():
            msg = f"{copy} is missing: this run's copy of its job list is gone; it cannot be resumed"
            raise RunDirectoryError(msg)
        if header.snapshot_sha256 is not None and file_sha256(copy) != header.snapshot_sha256:
            msg = (
                f"{copy} was changed after the run started (its checksum differs from run.json's); "
                "the run acts only on the list it validated: restore the copy, or start a new run"
            )
            raise RunDirectoryError(msg)
        jobs = _job_list(copy, header, _label(header.job_list))
        if source is not None:
            _check_same_list(directory, source, jobs, header, requested.fmt if "fmt" in explicit else None)
    validation = jobs.check()
    prepared = Prepared(header, options, jobs, validation, resumed=True)
    _load_journal(directory, prepared, notice)
    return prepared


def _label(job_list: str) -> str:
    return "<stdin>" if job_list == "-" else job_list


def _job_list(path: Path, header: RunHeader, display: str) -> JobList:
    return JobList(
        path,
        fmt=header.fmt,
        name_template=header.name_template,
        date=header.date,
        run_id=header.run_id,
        display=display,
    )


def _check_same_list(
    directory: RunDirectory, source: JobSource, copy: JobList, header: RunHeader, given_fmt: str | None
) -> None:
    """Refuse a job list given again that differs from the copy the run acts on."""
    given = source.path
    spooled: Path | None = None
    if given is None:  # a stream: spool it next to the copy to compare
        spooled = given = directory.file(".job-list.given")
        take_snapshot(source, spooled)
    try:
        if same_bytes(given, copy.path):
            return
        # The list given now is read in its own format (a CSV run resumed with a JSON list of the
        # same jobs is the same list); a name that does not tell it is read as the run's.
        fmt: str | None = given_fmt
        if fmt is None:
            try:
                fmt = detect_format(Path(source.suffix_name), None, display=source.label)
            except UsageError:
                fmt = header.fmt
        current = JobList(
            given,
            fmt=fmt,
            name_template=header.name_template,
            date=header.date,
            run_id=header.run_id,
            display=source.label,
        )
        current.check()
        differences = list_differences(iter(current), iter(copy))
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)
    if differences:
        lines = "\n  ".join(differences)
        msg = (
            f"{source.label} differs from the job list this run started with (its copy: "
            f"{copy.path}):\n  {lines}\nthis run acts only on its copy: resume it as it was with "
            f"'imagebatch run --out {directory.path} --resume' (no JOBLIST), or start a new run "
            "with a new --out for the changed list"
        )
        raise RunDirectoryError(msg)


def _load_journal(directory: RunDirectory, prepared: Prepared, notice: Callable[[str], None]) -> None:
    state = read_journal(directory.file(JOURNAL_FILE))
    for offset in state.corrupt_offsets:
        notice(
            f"{directory.file(JOURNAL_FILE)}: a damaged record at byte {offset} was skipped; "
            "the jobs it described are looked up again by name"
        )
    listed: set[str] = set()
    jobs = prepared.jobs
    for job in jobs:
        listed.add(job.instance_id)
        finished = state.results.get(job.instance_id)
        for kind, before in (
            ("ended", finished["imageName"] if finished else None),
            ("started", state.intents.get(job.instance_id)),
        ):
            if before is not None and before != job.image_name:
                msg = (
                    f"{jobs.display}:{job.line}: instance {job.instance_id} was {kind} in this run as image "
                    f"{before!r} but the job list now names {job.image_name!r}; resuming would be unsafe"
                )
                raise RunDirectoryError(msg)
    orphans = [i for i in state.intents if i not in listed and i not in state.final_results()]
    if orphans:
        msg = (
            f"the job list no longer has instance(s) {', '.join(orphans[:5])} that this run may have "
            "already sent CreateImage for; restore them to the list to resume safely"
        )
        raise RunDirectoryError(msg)
    prepared.intents = state.intents
    prepared.segments = list(state.segments.values())
    prepared.owed_starts = sorted(state.stopped - state.started)
    final = state.final_results()
    for instance_id in state.stopped | {i for i, r in state.results.items() if r.get("power")}:
        if instance_id in final:
            continue
        before = (state.results.get(instance_id) or {}).get("power")
        if before and before.get("actions"):
            prepared.power_history[instance_id] = dict(before)
        elif instance_id in state.stopped:
            # Stopped by an earlier process that ended before the job had a line: it was RUNNING.
            actions = ["stopped", *(["started"] if instance_id in state.started else [])]
            prepared.power_history[instance_id] = {"stateAtStart": "RUNNING", "actions": actions}
    for instance_id, record in state.final_results().items():
        if instance_id not in listed:
            continue  # ended in this run, since removed from a version-1 list: kept, not counted
        prepared.done_ids.add(instance_id)
        prepared.by_status[record["status"]] += 1
        if record.get("error"):
            prepared.error_codes[record["error"]["code"]] += 1
    if state.torn:
        compact_journal(directory, state)
    rebuild_results(directory, state)
