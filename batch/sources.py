"""Job lists: CSV, JSON and JSON Lines, read as streams and checked row by row.

Every problem names the file, the line and the field. No list is held in memory (a JSON list
is read a window of lines at a time, see :mod:`batch.jsonscan`; only a JSON list written on one
line is read whole): validation keeps only 8-byte hashes of ids and names to find duplicates,
and looks up where a duplicate first stood in a second pass, only when there is one.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import difflib
import itertools
import json
import re
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import JobListError, UsageError
from .jsonscan import JsonJobScanner, ScanProblem, deep_message, too_deep, unique_keys
from .models import Job
from .naming import DEFAULT_NAME_TEMPLATE, NameTemplate, image_name_problem
from .ownership import reserved_tag_problem
from .text import clip

__all__ = ["COLUMNS", "FAKE_COLUMNS", "JobList", "Validation", "detect_format"]

COLUMNS = ("instanceId", "imageName", "resourceGroupId", "tags", "group")
#: Columns only ``imagebatch fake-server --fleet`` reads (the run ignores them).
FAKE_COLUMNS = ("fakeGpu", "fakeBusySeconds", "fakeStatus", "fakeImageFails", "fakeHangs")
_ALL_COLUMNS = COLUMNS + FAKE_COLUMNS
_INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MASK = (1 << 64) - 1
FORMATS = ("csv", "json", "jsonl")
_NOT_OBJECT = "\0"  # key under which a non-object JSON job is carried to the checks


# A problem that stops reading the file (encoding, syntax, nesting); the JSON scanner raises it too.
_FileProblem = ScanProblem


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    fields: dict[str, Any]


@dataclass
class Validation:
    """The outcome of checking a whole job list."""

    jobs: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the image names of the jobs, as 8-byte hashes (see :meth:`may_contain_name`)
    name_hashes: _HashSet | None = None

    def may_contain_name(self, name: str) -> bool:
        """Whether some job may use this image name (no false negatives; rare false positives)."""
        return self.name_hashes is None or self.name_hashes.contains(name)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


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


class JobList:
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

    # ----- reading ---------------------------------------------------------------------------

    def _where(self, line: int | None, fld: str | None = None) -> str:
        place = f"{self.display}:{line}" if line else self.display
        return f"{place}: field {clip(fld)}" if fld else place

    def _lines(self) -> Iterator[tuple[int, str]]:
        """Decoded lines with their numbers; a UTF-8 BOM is dropped, other BOMs refused."""
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            msg = f"{self.display}: cannot open the job list: {exc.strerror}"
            raise UsageError(msg) from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                chunk = raw
                if number == 1:
                    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                        msg = f"{self._where(1)}: the file is UTF-16 (it starts with a UTF-16 BOM); save it as UTF-8"
                        raise _FileProblem(msg)
                    if raw.startswith(codecs.BOM_UTF8):
                        chunk = raw[len(codecs.BOM_UTF8) :]
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    msg = (
                        f"{self._where(number)}: not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at column "
                        f"{exc.start + 1}); save the file as UTF-8"
                    )
                    raise _FileProblem(msg) from exc
                yield number, text

    def has_utf8_bom(self) -> bool:
        """Whether the file starts with a UTF-8 byte-order mark (accepted, but worth a warning)."""
        try:
            with self.path.open("rb") as handle:
                return handle.read(3) == codecs.BOM_UTF8
        except OSError:
            return False

    def _rows(self, problems: list[str]) -> Iterator[_Row]:
        if self.fmt == "csv":
            yield from self._csv_rows(problems)
        elif self.fmt == "jsonl":
            yield from self._jsonl_rows(problems)
        else:
            yield from self._json_rows(problems)

    def _csv_rows(self, problems: list[str]) -> Iterator[_Row]:
        numbered = self._lines()
        current = [0]

        def text_lines() -> Iterator[str]:
            for number, text in numbered:
                current[0] = number
                yield text

        reader = csv.reader(text_lines(), strict=True)
        try:
            header = next(reader, None)
            while header is not None and not any(h.strip() for h in header):
                header = next(reader, None)
            if header is None:
                raise _FileProblem(f"{self._where(None)}: the file is empty; a CSV job list needs a header row")
            header_line = current[0]
            names = [h.strip() for h in header]
            usable = self._check_columns(names, header_line, problems)
            start = current[0] + 1
            for record in reader:
                line = start
                start = current[0] + 1
                if not any(v.strip() for v in record):
                    continue
                if len(record) != len(names):
                    problems.append(
                        f"{self._where(line)}: {len(record)} values but the header has {len(names)} columns"
                    )
                    continue
                yield _Row(line, {n: v for n, v in zip(names, record, strict=True) if n in usable})
        except csv.Error as exc:
            raise _FileProblem(f"{self._where(current[0])}: CSV syntax error: {exc}") from exc

    def _check_columns(self, names: list[str], line: int, problems: list[str]) -> set[str]:
        usable: set[str] = set()
        seen: set[str] = set()
        for name in names:
            if name in seen:
                problems.append(f"{self._where(line, name)}: column appears twice in the header")
            seen.add(name)
            if name in _ALL_COLUMNS:
                usable.add(name)
            else:
                problems.append(f"{self._where(line, name)}: unknown column{_did_you_mean(name)}")
        if "instanceId" not in seen:
            # Without it no row means anything: stop here rather than repeat it on every row.
            raise _FileProblem(f"{self._where(line, 'instanceId')}: required column is missing from the header")
        return usable

    def _jsonl_rows(self, problems: list[str]) -> Iterator[_Row]:
        # Lines are independent: a line that cannot be read is a problem at its line, and the
        # others are still checked (every problem is reported, not the first one only).
        empty = True
        for number, text in self._lines():
            if not text.strip():
                continue
            empty = False
            try:
                obj = json.loads(text, object_pairs_hook=unique_keys)
            except RecursionError:
                problems.append(deep_message(self._where(number)))
                continue
            except json.JSONDecodeError as exc:
                problems.append(f"{self._where(number)}: not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValueError as exc:  # a number over int's 4300-digit limit, a key twice
                problems.append(f"{self._where(number)}: not readable: {str(exc).split(';')[0]}")
                continue
            if too_deep(text, 0, len(text), obj):
                problems.append(deep_message(self._where(number)))
                continue
            yield _Row(number, obj if isinstance(obj, dict) else {_NOT_OBJECT: obj})
        if empty:
            raise _FileProblem(f"{self._where(None)}: the file is empty; a JSON Lines job list needs one job a line")

    def _json_rows(self, problems: list[str]) -> Iterator[_Row]:
        self._defaults = {}
        for line, obj, is_defaults in JsonJobScanner(self._lines(), self._where).jobs():
            if is_defaults:
                if not isinstance(obj, dict):
                    problems.append(f"{self._where(line, 'defaults')}: must be an object")
                    continue
                for key in obj:
                    if key not in ("resourceGroupId", "tags", "imageName"):
                        problems.append(f"{self._where(line, 'defaults.' + key)}: unknown default{_did_you_mean(key)}")
                self._defaults = {k: v for k, v in obj.items() if k in ("resourceGroupId", "tags", "imageName")}
                continue
            yield _Row(line, obj if isinstance(obj, dict) else {_NOT_OBJECT: obj})

    # ----- checking --------------------------------------------------------------------------

    def _job(self, row: _Row, problems: list[str]) -> Job | None:
        return self._check_row(row, problems)[0]

    def _check_row(self, row: _Row, problems: list[str]) -> tuple[Job | None, str, str]:
        """The row's job (``None`` when it has a problem), and its instance id and image name so
        far as they could be read (duplicates are found even on rows with other problems)."""
        fields = row.fields
        line = row.line
        if _NOT_OBJECT in fields:
            kind = type(fields[_NOT_OBJECT]).__name__
            problems.append(f"{self._where(line)}: a job must be an object, not {kind}")
            return None, "", ""
        before = len(problems)
        if self.fmt != "csv":
            for key in fields:
                if key not in _ALL_COLUMNS:
                    problems.append(f"{self._where(line, key)}: unknown field{_did_you_mean(key)}")
            fields = {**self._defaults, **fields} if self._defaults else fields
        instance_id = self._string(fields, "instanceId", line, problems, required=True)
        if instance_id and not _INSTANCE_ID_RE.fullmatch(instance_id):
            problems.append(f"{self._where(line, 'instanceId')}: {clip(instance_id)} is not an instance id")
            instance_id = ""
        group = self._string(fields, "resourceGroupId", line, problems) or None
        tags = self._tags(fields, line, problems)
        name = self._string(fields, "imageName", line, problems)
        from_template = not name
        values = {"instanceId": instance_id, "resourceGroupId": group or ""}
        if not name and instance_id:
            name = self.template.render(values, date=self.date, run_id=self.run_id)
            if not name:
                # An empty name is a problem like any bad name: the row must not vanish.
                problems.append(
                    f"{self._where(line, 'imageName')}: the name made by {self._template_origin(values)} is empty; "
                    "set imageName on this row or use {instanceId} in the template"
                )
        if name:
            problem = image_name_problem(name)
            if problem:
                origin = f" (made by {self._template_origin(values)})" if from_template else ""
                problems.append(f"{self._where(line, 'imageName')}: {problem}{origin}")
        fake = {k: str(fields[k]) for k in FAKE_COLUMNS if fields.get(k) not in (None, "")}
        power_group = self._string(fields, "group", line, problems) or None
        if power_group is not None and len(power_group) > 128:
            problems.append(f"{self._where(line, 'group')}: {clip(power_group)} is longer than 128 characters")
        if len(problems) > before or not instance_id or not name:
            return None, instance_id, name
        job = Job(
            line=line,
            instance_id=instance_id,
            image_name=name,
            resource_group_id=group,
            tags=tags,
            fake=fake,
            group=power_group,
        )
        return job, instance_id, name

    def _template_origin(self, values: Mapping[str, str]) -> str:
        """``--name-template '...' from resourceGroupId 'rg1', date``: the template and what it read."""
        used = [f"{f} {clip(values[f], 40)}" if f in values else f for f in self.template.fields]
        return f"--name-template {clip(self.template.template)}" + (f" from {', '.join(used)}" if used else "")

    def _string(
        self, fields: Mapping[str, Any], key: str, line: int, problems: list[str], *, required: bool = False
    ) -> str:
        value = fields.get(key)
        if value is None or value == "":
            if required:
                problems.append(f"{self._where(line, key)}: required and missing")
            return ""
        if not isinstance(value, str):
            hint = " (quote long numeric ids: JSON numbers lose digits in many tools)" if isinstance(value, int) else ""
            problems.append(f"{self._where(line, key)}: must be a string, not {type(value).__name__}{hint}")
            return ""
        value = value.strip()
        if required and not value:
            problems.append(f"{self._where(line, key)}: required and blank")
        return value

    def _tags(self, fields: Mapping[str, Any], line: int, problems: list[str]) -> tuple[tuple[str, str], ...]:
        raw = fields.get("tags")
        if raw is None or raw == "":
            return ()
        where = self._where(line, "tags")
        pairs: list[tuple[str, str]] = []
        if isinstance(raw, str):
            for part in raw.split(";"):
                if not part.strip():
                    continue
                key, sep, value = part.partition("=")
                if not sep:
                    problems.append(
                        f"{where}: {clip(part.strip())} is not key=value (write tags as key=value;key2=value2)"
                    )
                    continue
                pairs.append((key.strip(), value.strip()))
        elif isinstance(raw, dict):
            for key, value in raw.items():
                if not isinstance(value, str):
                    problems.append(f"{where}: value of tag {clip(key)} must be a string")
                    continue
                pairs.append((key, value))
        elif isinstance(raw, list):
            for item in raw:
                if not (
                    isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str)
                ):
                    problems.append(f'{where}: each list item must be {{"key": "...", "value": "..."}}')
                    continue
                pairs.append((item["key"], item["value"]))
        else:
            problems.append(f"{where}: must be 'k=v;k2=v2', an object, or a list of {{key, value}}")
            return ()
        seen: set[str] = set()
        for key, value in pairs:
            if not 1 <= len(key) <= 64 or not 1 <= len(value) <= 64:
                problems.append(f"{where}: tag {clip(key)}: keys and values must be 1-64 characters")
            if key in seen:
                problems.append(f"{where}: tag key {clip(key)} appears twice")
            seen.add(key)
        if (reserved := reserved_tag_problem(pairs)) is not None:
            problems.append(f"{where}: {reserved}")
        return tuple(pairs)

    # ----- whole-file passes -----------------------------------------------------------------

    def validate(self) -> Validation:
        """Check every row; collect every problem (never stops at the first)."""
        result = Validation()
        if self.fmt == "csv" and self.has_utf8_bom():
            result.warnings.append(f"{self.display}:1: starts with a UTF-8 byte-order mark (ignored)")
        ids = _HashSet()
        names = _HashSet()
        try:
            for row in self._rows(result.problems):
                job, instance_id, name = self._check_row(row, result.problems)
                result.jobs += job is not None
                if instance_id:
                    ids.add(instance_id)
                if name:
                    names.add(name)
        except _FileProblem as exc:
            result.problems.append(str(exc))
            return result
        dup_ids, dup_names = ids.duplicates(), names.duplicates()
        result.name_hashes = names
        if dup_ids or dup_names:
            self._report_duplicates(dup_ids, dup_names, result.problems)
        if result.jobs == 0 and not result.problems:
            result.problems.append(f"{self._where(None)}: the job list has no jobs")
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
                if not value or _hash(value) not in candidates:
                    continue
                seen_at = first.setdefault((fld, value), row.line)
                if seen_at != row.line:
                    problems.append(
                        f"{self._where(row.line, fld)}: {label} {clip(value)} (first at line {seen_at}){advice}"
                    )

    def __iter__(self) -> Iterator[Job]:
        """Yield the jobs in file order. Call :meth:`validate` first: bad rows are an error here."""
        problems: list[str] = []
        try:
            for row in self._rows(problems):
                job = self._job(row, problems)
                if problems:
                    raise JobListError(problems)
                if job is not None:
                    yield job
        except _FileProblem as exc:
            raise JobListError([str(exc)]) from exc
        if problems:
            raise JobListError(problems)

    def check(self) -> Validation:
        """Validate and raise :class:`JobListError` when anything is wrong."""
        result = self.validate()
        if not result.ok:
            raise JobListError(result.problems)
        return result


def _did_you_mean(name: str) -> str:
    # difflib indexes every character of the name: a 10 MB key would take seconds for nothing.
    close = difflib.get_close_matches(name, _ALL_COLUMNS, n=1, cutoff=0.6) if len(name) <= 100 else []
    if not close:
        close = [c for c in _ALL_COLUMNS if c.lower() == name.lower()]
    known = ", ".join(COLUMNS)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {known})"


def _hash(value: str) -> int:
    return hash(value) & _MASK


class _HashSet:
    """Finds repeated strings with 8 bytes a string: hashes in an array, bucketed and sorted.

    A repeated hash is a candidate only; the caller confirms it against the real strings.
    """

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    def add(self, value: str) -> None:
        digest = _hash(value)
        self._buckets[digest & 0xFF].append(digest)

    def duplicates(self) -> set[int]:
        """Sort each bucket in place and return the hashes that occur more than once."""
        found: set[int] = set()
        for index, bucket in enumerate(self._buckets):
            ordered = array("Q", sorted(bucket))
            self._buckets[index] = ordered
            found.update(a for a, b in itertools.pairwise(ordered) if a == b)
        return found

    def contains(self, value: str) -> bool:
        """Membership test; valid after :meth:`duplicates` sorted the buckets."""
        digest = _hash(value)
        bucket = self._buckets[digest & 0xFF]
        at = bisect.bisect_left(bucket, digest)
        return at < len(bucket) and bucket[at] == digest
