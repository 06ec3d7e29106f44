"""Read a JSON job list as a stream: each job with the line it starts on.

The whole document is never decoded at once: the scanner walks the outer ``[...]`` (or
``{"defaults": {...}, "jobs": [...]}``) itself and hands each job to ``json``'s decoder, over a
window of whole lines that slides forward. Line numbers are counted incrementally, so reading
is linear in the file size (counting from the start of the file for every job made 80,000 jobs
take half a minute), and memory is the window plus the largest job, not the file.

Nesting is bounded: ``json`` recurses once per level and a hostile ``[[[[...]]]]`` would end
in ``RecursionError``. A job deeper than :data:`MAX_DEPTH` is a problem at its line; jobs are
objects of strings and tags, three levels deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from .text import clip

__all__ = ["MAX_DEPTH", "JsonJobScanner", "ScanProblem", "deep_message", "too_deep", "unique_keys"]

#: deepest nesting accepted in one job (a job with tags as a list of objects is 3)
MAX_DEPTH = 32
# The window is refilled when less than _AHEAD is left after the cursor, up to _CHUNK ahead:
# refilling copies what is left, so refilling a little before every job would copy the
# window once a job.
_AHEAD = 1 << 12
_CHUNK = 1 << 16
_SPACE = re.compile(r"[ \t\r\n]*")


class ScanProblem(Exception):
    """A problem that stops reading the file (encoding, syntax, nesting); ``str`` is the message."""


def too_deep(text: str, start: int, end: int, value: Any) -> bool:
    """Whether a decoded value nests deeper than :data:`MAX_DEPTH`.

    Args:
        text: the text the value was decoded from.
        start: where the value starts in ``text``.
        end: where it ends.
        value: the decoded value.
    """
    # A value with no more opening brackets than the limit cannot nest deeper than it; only
    # the rare big value is walked.
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_DEPTH:
        return False
    return _depth_exceeds(value, MAX_DEPTH)


def _depth_exceeds(value: Any, budget: int) -> bool:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if budget == 0:
        return True
    return any(_depth_exceeds(child, budget - 1) for child in children)


def deep_message(where: str) -> str:
    """The message for a job nested too deeply.

    Args:
        where: the place, ``FILE:LINE``.
    """
    return f"{where}: nested deeper than {MAX_DEPTH} levels; a job is an object of strings and tags"


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json's default keeps the last silently).

    Raises:
        ValueError: naming the key that appears twice.
    """
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            msg = f"the key {clip(key, 40)} appears twice in one object"
            raise ValueError(msg)
        obj[key] = value
    return obj


class JsonJobScanner:
    """Walks a JSON job list, yielding ``(line, value, is_defaults)`` for each job and the defaults.

    Accepts ``[job, ...]`` or ``{"defaults": {...}, "jobs": [job, ...]}`` (``defaults`` first, as
    it applies to the jobs after it, and each key once).

    Args:
        lines: the file's decoded lines with their numbers, from 1, each with its newline.
        where: formats a line number (``None``: the whole file) as ``FILE:LINE`` for messages.
    """

    def __init__(self, lines: Iterator[tuple[int, str]], where: Callable[[int | None], str]) -> None:
        self._lines = lines
        self._where = where
        self._decoder = json.JSONDecoder(object_pairs_hook=unique_keys)
        self._buf = ""  # always starts at the start of a line
        self._pos = 0
        self._eof = False
        # Line number of the buffer's position _mark_pos, moved along as lines are asked for.
        self._mark_pos = 0
        self._mark_line = 1

    # ----- the window ------------------------------------------------------------------------

    def _line(self, pos: int) -> int:
        if pos >= self._mark_pos:
            self._mark_line += self._buf.count("\n", self._mark_pos, pos)
        else:
            self._mark_line -= self._buf.count("\n", pos, self._mark_pos)
        self._mark_pos = pos
        return self._mark_line

    def _read(self, need: int) -> None:
        """Have at least ``need`` characters after the cursor (``_CHUNK`` when reading), or all that is left."""
        if len(self._buf) - self._pos >= need or self._eof:
            return
        need = max(need, _CHUNK)
        cut = self._buf.rfind("\n", 0, self._pos) + 1
        if cut:
            # Drop what is read, at a line start so that columns stay right; positions held
            # by callers die here, which is why callers keep line numbers, not positions.
            self._line(cut)
            self._buf = self._buf[cut:]
            self._pos -= cut
            self._mark_pos -= cut
        pieces = [self._buf]
        have = len(self._buf) - self._pos
        for _, text in self._lines:
            pieces.append(text)
            have += len(text)
            if have >= need:
                break
        else:
            self._eof = True
        self._buf = "".join(pieces)

    def _peek(self) -> str:
        """Skip white space and return the next character, ``""`` at the end of the file."""
        while True:
            match = _SPACE.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return ""
            self._read(_AHEAD)

    def _fail(self, what: str, line: int | None = None) -> ScanProblem:
        return ScanProblem(f"{self._where(self._line(self._pos) if line is None else line)}: {what}")

    def _expect(self, chars: str) -> str:
        found = self._peek()
        if not found or found not in chars:
            shown = repr(found) if found else "end of file"
            raise self._fail(f"not valid JSON: expected {' or '.join(repr(c) for c in chars)}, found {shown}")
        self._pos += 1
        return found

    def _value(self) -> tuple[int, Any]:
        """Decode the value at the cursor; return the line it starts on and the value."""
        self._peek()
        need = _AHEAD
        while True:
            self._read(need)
            start = self._pos
            try:
                value, end = self._decoder.raw_decode(self._buf, start)
            except RecursionError:
                raise ScanProblem(deep_message(self._where(self._line(start)))) from None
            except json.JSONDecodeError as exc:
                if exc.pos >= len(self._buf) and not self._eof:
                    # The window ends inside this value (it cannot end inside a token: the
                    # window holds whole lines): read as much again and decode it anew.
                    need = 2 * (len(self._buf) - start)
                    continue
                column = exc.pos - self._buf.rfind("\n", 0, exc.pos)
                msg = f"{self._where(self._line(exc.pos))}: not valid JSON: {exc.msg} (column {column})"
                raise ScanProblem(msg) from None
            except ValueError as exc:  # a number over int's 4300-digit limit
                raise ScanProblem(f"{self._where(self._line(start))}: not readable: {str(exc).split(';')[0]}") from None
            break
        line = self._line(start)
        if too_deep(self._buf, start, end, value):
            raise ScanProblem(deep_message(self._where(line)))
        self._pos = end
        return line, value

    # ----- the document ----------------------------------------------------------------------

    def _array(self) -> Iterator[tuple[int, Any, bool]]:
        self._expect("[")
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            line, value = self._value()
            yield line, value, False
            if self._expect(",]") == "]":
                return

    def _object(self) -> Iterator[tuple[int, Any, bool]]:
        self._expect("{")
        seen: set[str] = set()
        if self._peek() == "}":
            self._pos += 1
        else:
            while True:
                key_line, key = self._value()
                if not isinstance(key, str):
                    raise self._fail("not valid JSON: object keys must be strings", key_line)
                if key in seen:
                    raise self._fail(f"top-level field {clip(key)} appears twice", key_line)
                self._expect(":")
                if key == "jobs":
                    if self._peek() != "[":
                        raise self._fail("field 'jobs' must be an array of job objects")
                    yield from self._array()
                elif key == "defaults":
                    if "jobs" in seen:
                        raise self._fail("field 'defaults' must come before 'jobs' (it applies to the jobs after it)")
                    line, value = self._value()
                    yield line, value, True
                else:
                    raise self._fail(f"unknown top-level field {clip(key)}; expected 'defaults' and 'jobs'", key_line)
                seen.add(key)
                if self._expect(",}") == "}":
                    break
        if "jobs" not in seen:
            raise self._fail('field \'jobs\' is missing; expected {"defaults": {...}, "jobs": [...]}', 1)

    def jobs(self) -> Iterator[tuple[int, Any, bool]]:
        """Yield ``(line, value, is_defaults)`` in file order; raise :class:`ScanProblem` on a bad file."""
        first = self._peek()
        if first == "[":
            yield from self._array()
        elif first == "{":
            yield from self._object()
        elif not first:
            raise ScanProblem(f"{self._where(None)}: the file is empty; a JSON job list is an array of jobs")
        else:
            raise self._fail('a JSON job list must be an array of jobs or {"defaults": ..., "jobs": [...]}')
        if self._peek():
            raise self._fail("extra text after the end of the JSON document")
