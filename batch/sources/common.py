"""What every part of job-list reading shares: the columns, the formats, a row, a file problem.

A job list is CSV, JSON or JSON Lines. :func:`detect_format` picks one; :mod:`.readers` turns a
file into rows, :mod:`.checks` turns a row into a :class:`~batch.models.Job` (or problems that
name the file, line and field), and :mod:`.joblist` runs whole-file passes over both.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..jsonscan import ScanProblem
from ..text import clip

__all__ = [
    "ALL_COLUMNS",
    "COLUMNS",
    "FAKE_COLUMNS",
    "FORMATS",
    "INSTANCE_ID_RE",
    "NOT_OBJECT",
    "FileProblem",
    "Located",
    "Row",
    "detect_format",
    "did_you_mean",
]

#: ``instanceName`` and ``zoneId`` are for people (``imagebatch inventory`` writes them); the run does not read them
COLUMNS = ("instanceId", "imageName", "resourceGroupId", "tags", "group", "instanceName", "zoneId")
#: Columns only ``imagebatch fake-server --fleet`` reads (the run ignores them).
FAKE_COLUMNS = ("fakeGpu", "fakeBusySeconds", "fakeStatus", "fakeImageFails", "fakeHangs")
ALL_COLUMNS = COLUMNS + FAKE_COLUMNS
INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
FORMATS = ("csv", "json", "jsonl")
#: key under which a non-object JSON job is carried to the checks
NOT_OBJECT = "\0"

#: A problem that stops reading the file (encoding, syntax, nesting); the JSON scanner raises it too.
FileProblem = ScanProblem


class Located:
    """A job list's name in messages, and where in it a problem stands."""

    display: str

    def _where(self, line: int | None, fld: str | None = None) -> str:
        place = f"{self.display}:{line}" if line else self.display
        return f"{place}: field {clip(fld)}" if fld else place


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a job list, before its checks.

    Args:
        line: where it starts in the file (1-based).
        fields: its columns (CSV) or keys (JSON).
    """

    line: int
    fields: dict[str, Any]


def detect_format(path: Path, forced: str | None = None, *, display: str | None = None) -> str:
    """Choose csv, json or jsonl from ``forced`` or the file's suffix.

    Args:
        path: the job list.
        forced: the ``--format`` value, if any.
        display: the file's name in messages (``str(path)`` when ``None``).
    """
    if forced:
        if forced not in FORMATS:
            msg = f"--format must be one of {', '.join(FORMATS)}, not {clip(forced)}"
            raise UsageError(msg)
        return forced
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        return "csv"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".json":
        return "json"
    msg = f"{display or path}: cannot tell the format from the name; use a .csv, .json or .jsonl name or --format"
    raise UsageError(msg)


def did_you_mean(name: str) -> str:
    """`` (did you mean 'x'?)`` for a close known column, else the known columns.

    Args:
        name: the unknown column or field.
    """
    # difflib indexes every character of the name: a 10 MB key would take seconds for nothing.
    close = difflib.get_close_matches(name, ALL_COLUMNS, n=1, cutoff=0.6) if len(name) <= 100 else []
    if not close:
        close = [c for c in ALL_COLUMNS if c.lower() == name.lower()]
    known = ", ".join(COLUMNS)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {known})"
