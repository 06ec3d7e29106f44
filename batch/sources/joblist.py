"""A job list: its rows read (:mod:`.readers`), checked (:mod:`.checks`), validated whole.

Every problem names the file, the line and the field. No long list is held in memory (a JSON
list is read a window of lines at a time, see :mod:`batch.jsonscan`; only a JSON list written on
one line is read whole): validation keeps only 8-byte hashes of ids and names to find
duplicates, and looks up where a duplicate first stood in a second pass, only when there is one.
A short valid list (:data:`KEEP_JOBS`) keeps its jobs, so that a run reads the file once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import JobListError, UsageError
from ..models import Job
from ..naming import DEFAULT_NAME_TEMPLATE, NameTemplate
from ..text import clip
from .checks import HashSet, RowChecker, string_hash
from .common import FileProblem, detect_format
from .readers import RowReader

__all__ = ["KEEP_JOBS", "JobList", "Validation"]

#: A valid list of at most this many jobs keeps them from its validation, and the run reads
#: them from memory instead of the file (about 400 bytes a job: 10 MB at most). A longer list
#: is read again a row at a time, so memory stays flat whatever its length.
KEEP_JOBS = 25_000


@dataclass
class Validation:
    """The outcome of checking a whole job list."""

    jobs: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the image names of the jobs, as 8-byte hashes (see :meth:`may_contain_name`)
    name_hashes: HashSet | None = None

    def may_contain_name(self, name: str) -> bool:
        """Whether some job may use this image name (no false negatives; rare false positives)."""
        return self.name_hashes is None or self.name_hashes.contains(name)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


class JobList(RowReader, RowChecker):
    """A job list file and the rules that turn its rows into :class:`Job` values.

    Args:
        path: the file.
        fmt: ``csv``, ``json`` or ``jsonl``; guessed from the suffix when ``None``.
        name_template: makes image names for rows without ``imageName``.
        date: the run's start time, the template's ``date`` field.
        run_id: the template's ``run_id`` field.
        display: the file's name in every message, instead of ``str(path)``: the run reads a
            snapshot of the list, or a spooled copy of standard input (``"<stdin>"``), and its
            messages must name what the user gave.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        name_template: str = DEFAULT_NAME_TEMPLATE,
        date: datetime | None = None,
        run_id: str = "",
        display: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.display = display or str(self.path)
        self.fmt = detect_format(self.path, fmt, display=self.display)
        try:
            self.template = NameTemplate(name_template)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        self.date = date or datetime.now(UTC)
        self.run_id = run_id
        self._defaults: dict[str, Any] = {}
        #: the jobs of the last validation that found no problem, if there were few enough
        self._kept: list[Job] | None = None

    def validate(self) -> Validation:
        """Check every row; collect every problem (never stops at the first)."""
        result = Validation()
        if self.fmt == "csv" and self.has_utf8_bom():
            result.warnings.append(f"{self.display}:1: starts with a UTF-8 byte-order mark (ignored)")
        ids = HashSet()
        names = HashSet()
        self._kept = None
        kept: list[Job] | None = []
        try:
            for row in self._rows(result.problems):
                job, instance_id, name = self._check_row(row, result.problems)
                if job is not None:
                    result.jobs += 1
                    if kept is not None:
                        kept.append(job)
                        if len(kept) > KEEP_JOBS:
                            kept = None
                if instance_id:
                    ids.add(instance_id)
                if name:
                    names.add(name)
        except FileProblem as exc:
            result.problems.append(str(exc))
            return result
        dup_ids, dup_names = ids.duplicates(), names.duplicates()
        result.name_hashes = names
        if dup_ids or dup_names:
            self._report_duplicates(dup_ids, dup_names, result.problems)
        if result.jobs == 0 and not result.problems:
            result.problems.append(f"{self._where(None)}: the job list has no jobs")
        if result.ok:
            # Read once: the row checks were an eighth of an unpaced run's CPU, done twice.
            self._kept = kept
        return result

    def _report_duplicates(self, dup_ids: set[int], dup_names: set[int], problems: list[str]) -> None:
        """Second pass, only when hashes repeat: name each repeat and where it first stood."""
        first: dict[tuple[str, str], int] = {}
        checks = (
            ("instanceId", "duplicate instanceId", dup_ids, ""),
            ("imageName", "duplicate image name", dup_names, "; each job needs its own name"),
        )
        for row in self._rows([]):
            _, instance_id, name = self._check_row(row, [])
            for (fld, label, candidates, advice), value in zip(checks, (instance_id, name), strict=True):
                if not value or string_hash(value) not in candidates:
                    continue
                seen_at = first.setdefault((fld, value), row.line)
                if seen_at != row.line:
                    problems.append(
                        f"{self._where(row.line, fld)}: {label} {clip(value)} (first at line {seen_at}){advice}"
                    )

    def __iter__(self) -> Iterator[Job]:
        """Yield the jobs in file order. Call :meth:`validate` first: bad rows are an error here.

        After a validation that found no problem in at most :data:`KEEP_JOBS` jobs, the jobs it
        read, without reading the file again.
        """
        if self._kept is not None:
            yield from self._kept
            return
        problems: list[str] = []
        try:
            for row in self._rows(problems):
                job = self._job(row, problems)
                if problems:
                    raise JobListError(problems)
                if job is not None:
                    yield job
        except FileProblem as exc:
            raise JobListError([str(exc)]) from exc
        if problems:
            raise JobListError(problems)

    def check(self) -> Validation:
        """Validate and raise :class:`JobListError` when anything is wrong."""
        result = self.validate()
        if not result.ok:
            raise JobListError(result.problems)
        return result
