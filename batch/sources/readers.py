"""Reading a job list file into rows: CSV, JSON Lines and JSON, as streams.

No list is held in memory: a JSON list is read a window of lines at a time (see
:mod:`batch.jsonscan`; only a JSON list written on one line is read whole). A problem that stops
reading the file raises :data:`~.common.FileProblem`; a problem of one row is appended to the
caller's list and reading goes on.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..jsonscan import JsonJobScanner, deep_message, too_deep, unique_keys
from .common import ALL_COLUMNS, NOT_OBJECT, FileProblem, Located, Row, did_you_mean

__all__ = ["RowReader"]


class RowReader(Located):
    """The reading half of :class:`~batch.sources.JobList`: file -> numbered rows."""

    path: Path
    fmt: str
    #: a JSON list's ``defaults`` object, read by :meth:`_json_rows` (the checks apply it)
    _defaults: dict[str, Any]

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
                        raise FileProblem(msg)
                    if raw.startswith(codecs.BOM_UTF8):
                        chunk = raw[len(codecs.BOM_UTF8) :]
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    msg = (
                        f"{self._where(number)}: not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at column "
                        f"{exc.start + 1}); save the file as UTF-8"
                    )
                    raise FileProblem(msg) from exc
                yield number, text

    def has_utf8_bom(self) -> bool:
        """Whether the file starts with a UTF-8 byte-order mark (accepted, but worth a warning)."""
        try:
            with self.path.open("rb") as handle:
                return handle.read(3) == codecs.BOM_UTF8
        except OSError:
            return False

    def _rows(self, problems: list[str]) -> Iterator[Row]:
        if self.fmt == "csv":
            yield from self._csv_rows(problems)
        elif self.fmt == "jsonl":
            yield from self._jsonl_rows(problems)
        else:
            yield from self._json_rows(problems)

    def _csv_rows(self, problems: list[str]) -> Iterator[Row]:
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
                raise FileProblem(f"{self._where(None)}: the file is empty; a CSV job list needs a header row")
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
                yield Row(line, {n: v for n, v in zip(names, record, strict=True) if n in usable})
        except csv.Error as exc:
            raise FileProblem(f"{self._where(current[0])}: CSV syntax error: {exc}") from exc

    def _check_columns(self, names: list[str], line: int, problems: list[str]) -> set[str]:
        usable: set[str] = set()
        seen: set[str] = set()
        for name in names:
            if name in seen:
                problems.append(f"{self._where(line, name)}: column appears twice in the header")
            seen.add(name)
            if name in ALL_COLUMNS:
                usable.add(name)
            else:
                problems.append(f"{self._where(line, name)}: unknown column{did_you_mean(name)}")
        if "instanceId" not in seen:
            # Without it no row means anything: stop here rather than repeat it on every row.
            raise FileProblem(f"{self._where(line, 'instanceId')}: required column is missing from the header")
        return usable

    def _jsonl_rows(self, problems: list[str]) -> Iterator[Row]:
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
            yield Row(number, obj if isinstance(obj, dict) else {NOT_OBJECT: obj})
        if empty:
            raise FileProblem(f"{self._where(None)}: the file is empty; a JSON Lines job list needs one job a line")

    def _json_rows(self, problems: list[str]) -> Iterator[Row]:
        self._defaults = {}
        for line, obj, is_defaults in JsonJobScanner(self._lines(), self._where).jobs():
            if is_defaults:
                if not isinstance(obj, dict):
                    problems.append(f"{self._where(line, 'defaults')}: must be an object")
                    continue
                for key in obj:
                    if key not in ("resourceGroupId", "tags", "imageName"):
                        problems.append(f"{self._where(line, 'defaults.' + key)}: unknown default{did_you_mean(key)}")
                self._defaults = {k: v for k, v in obj.items() if k in ("resourceGroupId", "tags", "imageName")}
                continue
            yield Row(line, obj if isinstance(obj, dict) else {NOT_OBJECT: obj})
