"""The job list a run keeps in its run directory, read row by row as it was written.

``imagebatch report`` counts the run's jobs from it, and ``--failed-jobs`` copies some of its
rows, with the same columns (and a JSON list's ``defaults``), into a new list for a retry run.
The copy was validated when the run started; it is read as a stream, never whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .jsonscan import JsonJobScanner, ScanProblem
from .listwrite import write_checked_job_list
from .sources import detect_format

__all__ = ["ListCopy"]


@dataclass(frozen=True, slots=True)
class _Row:
    instance_id: str
    #: the row as read: a CSV record, a JSON object, or a JSON Lines line's text
    raw: Any


class ListCopy:
    """A run's copy of its job list.

    Args:
        path: the copy.
        fmt: its format (``csv``, ``json``, ``jsonl``).
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self._header: list[str] = []
        self._defaults: dict[str, Any] | None = None

    def _rows(self) -> Iterator[_Row]:
        try:
            with self.path.open(encoding="utf-8-sig", newline="") as handle:
                if self.fmt == "csv":
                    yield from self._csv(handle)
                elif self.fmt == "jsonl":
                    for text in handle:
                        obj = json.loads(text) if text.strip() else None
                        if isinstance(obj, dict):
                            yield _Row(str(obj.get("instanceId", "")).strip(), text.rstrip("\r\n"))
                else:
                    where = lambda line: f"{self.path}:{line}" if line else str(self.path)  # noqa: E731
                    for _, obj, is_defaults in JsonJobScanner(enumerate(handle, start=1), where).jobs():
                        if is_defaults:
                            self._defaults = obj if isinstance(obj, dict) else None
                        elif isinstance(obj, dict):
                            yield _Row(str(obj.get("instanceId", "")).strip(), obj)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error, ScanProblem) as exc:
            msg = f"{self.path}: cannot read the run's copy of its job list: {exc}"
            raise UsageError(msg) from exc

    def _csv(self, handle: io.TextIOBase) -> Iterator[_Row]:
        reader = csv.reader(handle, strict=True)
        self._header = []
        for record in reader:
            if not any(v.strip() for v in record):
                continue
            if not self._header:
                self._header = [h.strip() for h in record]
                continue
            row = dict(zip(self._header, record, strict=False))
            yield _Row(row.get("instanceId", "").strip(), record)

    def instance_ids(self) -> Iterator[str]:
        """The instance id of every job, in order."""
        for row in self._rows():
            yield row.instance_id

    def write_subset(self, ids: Collection[str], out: Path) -> int:
        """Write the rows of these instances, as they are, to a new job list; return how many.

        Args:
            ids: the instances to keep.
            out: the new list; its name must say the copy's format (rows are copied, not converted).

        Raises:
            UsageError: ``out`` names another format, or the list cannot be written.
        """
        wanted = detect_format(out)
        if wanted != self.fmt:
            msg = f"{out}: the run's job list is {self.fmt.upper()}; name the new list .{self.fmt} (rows are copied)"
            raise UsageError(msg)
        kept = [row.raw for row in self._rows() if row.instance_id in ids]
        if self.fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(self._header)
            writer.writerows(kept)
            data = buffer.getvalue()
        elif self.fmt == "jsonl":
            data = "".join(f"{line}\n" for line in kept)
        else:
            jobs = "[\n" + ",\n".join(json.dumps(job, ensure_ascii=False) for job in kept) + "\n]"
            data = jobs if self._defaults is None else f'{{"defaults": {json.dumps(self._defaults)},\n"jobs": {jobs}}}'
            data += "\n"
        write_checked_job_list(out, data.encode(), self.fmt, what="list of failed jobs")
        return len(kept)
