"""Build a fake fleet from a job list (``--fleet``) or a count (``--instances``).

The fake reads job lists itself, and only the columns it needs (``instanceId`` and the
fake-only ``fake*`` columns): it shares no code with the client's job-list reader, so a bug
there cannot hide behind the same bug here. Every other column or field is ignored.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .state import FakeInstance

__all__ = ["FleetError", "fleet_from_count", "fleet_from_job_list", "instance_id"]

_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"", "0", "false", "no", "n"}
#: ``fakeStatus`` values: the instance states the fake knows, and MISSING (left out of the fleet).
_STATUSES = frozenset(
    {
        "STOPPED",
        "RUNNING",
        "STOPPING",
        "BOOTING",
        "IMAGING",
        "REBUILDING",
        "RESIZING",
        "DEPLOYING",
        "RECYCLE",
        "MISSING",
    }
)
_JSON = json.JSONDecoder()


class FleetError(ValueError):
    """A fleet file the fake cannot read; the message names the file, line and field."""


def fleet_from_job_list(path: Path) -> list[FakeInstance]:
    """Instances named by a job list: STOPPED, non-GPU and idle unless its fake-only columns say
    otherwise (``fakeGpu``, ``fakeBusySeconds``, ``fakeStatus``, ``fakeImageFails``,
    ``fakeHangs``; ``fakeStatus=MISSING`` leaves the instance out, so CreateImage answers
    not-found; ``RECYCLE`` puts it in the recycle bin).

    Args:
        path: a CSV (header row), JSON (an array of jobs, or ``{"jobs": [...]}``) or JSON Lines
            file, told apart by its suffix.

    Raises:
        FleetError: the file cannot be read, or a row has no usable ``instanceId`` or a bad
            fake-only value.
    """
    fleet: list[FakeInstance] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path):
        where = f"{path}:{line}"
        ident = row.get("instanceId")
        if not isinstance(ident, str) or not ident.strip():
            raise FleetError(f"{where}: field 'instanceId': required, a non-empty string")
        ident = ident.strip()
        if ident in seen:
            raise FleetError(f"{where}: field 'instanceId': {ident!r} repeats line {seen[ident]}")
        seen[ident] = line
        status = _text(row, "fakeStatus", where).upper() or "STOPPED"
        if status not in _STATUSES:
            raise FleetError(f"{where}: field 'fakeStatus': {status!r} is not one of {', '.join(sorted(_STATUSES))}")
        if status == "MISSING":
            continue
        busy_text = _text(row, "fakeBusySeconds", where) or "0"
        try:
            busy = float(busy_text)
        except ValueError:
            raise FleetError(f"{where}: field 'fakeBusySeconds': {busy_text!r} is not a number") from None
        if not 0 <= busy < float("inf"):
            raise FleetError(f"{where}: field 'fakeBusySeconds': {busy_text!r} must be zero or more")
        fleet.append(
            FakeInstance(
                ident,
                status=status,
                gpu=_flag(row, "fakeGpu", where),
                busy_until=busy,
                image_fails=_flag(row, "fakeImageFails", where),
                hangs=_flag(row, "fakeHangs", where),
            )
        )
    return fleet


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).strip()
    raise FleetError(f"{where}: field {key!r}: must be a string, number or boolean")


def _flag(row: dict[str, Any], key: str, where: str) -> bool:
    value = _text(row, key, where).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FleetError(f"{where}: field {key!r}: {value!r} is not true or false")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, fields) of each job in the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise FleetError(f"{path}: cannot read the fleet: {reason}") from exc
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        yield from _csv_rows(path, text)
    elif suffix in {".jsonl", ".ndjson"}:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, _object(path, number, _decode(path, line, 0, number)[0])
    elif suffix == ".json":
        yield from _json_rows(path, text)
    else:
        raise FleetError(f"{path}: cannot tell the format from the name; use a .csv, .json or .jsonl name")


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    try:
        header = [h.strip() for h in next(reader, [])]
        if "instanceId" not in header:
            raise FleetError(f"{path}:1: field 'instanceId': required column is missing from the header")
        for record in reader:
            if any(v.strip() for v in record):
                yield reader.line_num, dict(zip(header, record, strict=False))
    except csv.Error as exc:
        raise FleetError(f"{path}:{reader.line_num}: CSV syntax error: {exc}") from exc


def _json_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # Decoded element by element so that every job keeps the line it starts on.
    pos = _skip(text, 0)
    if text.startswith("{", pos):
        pos = _find_jobs(path, text, pos)
    if not text.startswith("[", pos):
        raise FleetError(f"{path}:{_line(text, pos)}: a JSON fleet is an array of jobs or an object with 'jobs'")
    pos = _skip(text, pos + 1)
    while not text.startswith("]", pos):
        line = _line(text, pos)
        job, end = _decode(path, text, pos, line)
        pos = _skip(text, end)
        yield line, _object(path, line, job)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("]", pos):
            raise FleetError(f"{path}:{_line(text, pos)}: expected ',' or ']' between jobs")


def _find_jobs(path: Path, text: str, pos: int) -> int:
    """Position of the value of the top-level object's ``jobs`` key."""
    pos = _skip(text, pos + 1)
    while not text.startswith("}", pos):
        key, end = _decode(path, text, pos, _line(text, pos))
        pos = _skip(text, end)
        if not text.startswith(":", pos):
            raise FleetError(f"{path}:{_line(text, pos)}: expected ':' after a key")
        pos = _skip(text, pos + 1)
        if key == "jobs":
            return pos
        _, end = _decode(path, text, pos, _line(text, pos))
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("}", pos):
            raise FleetError(f"{path}:{_line(text, pos)}: expected ',' or '}}' between keys")
    raise FleetError(f"{path}:{_line(text, pos)}: field 'jobs': the object has no jobs array")


def _decode(path: Path, text: str, pos: int, line: int) -> tuple[Any, int]:
    """The JSON value at ``pos`` and the position after it."""
    try:
        return _JSON.raw_decode(text, pos)
    except ValueError as exc:
        raise FleetError(f"{path}:{line}: not valid JSON: {exc}") from None


def _object(path: Path, line: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FleetError(f"{path}:{line}: a job must be an object, not {type(value).__name__}")
    return value


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def fleet_from_count(
    count: int,
    *,
    busy_fraction: float = 0.0,
    busy_max_seconds: float = 0.0,
    gpu_fraction: float = 0.0,
    running_fraction: float = 0.0,
    seed: int = 0,
) -> list[FakeInstance]:
    """``count`` STOPPED instances with ids ``1000000000000000001``...; a seeded share of them
    busy for a random time up to ``busy_max_seconds``, GPU, or RUNNING.

    ``imagebatch fake-server --write-jobs`` writes them as a job list; the benchmarks use the same ids.

    Args:
        count: how many instances.
        busy_fraction: share of instances busy at the start.
        busy_max_seconds: a busy instance is busy for up to this long.
        gpu_fraction: share of GPU instances.
        running_fraction: share of instances RUNNING at the start.
        seed: seed of the dice.
    """
    rng = random.Random(seed)  # noqa: S311 - test fixture dice
    # Its own dice, so that a share of RUNNING instances leaves the busy and GPU draws of a seed
    # (which the benchmarks count on) as they were.
    power_rng = random.Random(f"{seed}:running")  # noqa: S311 - test fixture dice
    fleet = []
    for n in range(1, count + 1):
        busy = rng.uniform(0, busy_max_seconds) if rng.random() < busy_fraction else 0.0
        gpu = rng.random() < gpu_fraction
        status = "RUNNING" if power_rng.random() < running_fraction else "STOPPED"
        fleet.append(FakeInstance(instance_id(n), status=status, gpu=gpu, busy_until=busy))
    return fleet


def instance_id(n: int) -> str:
    """The id of the n-th generated instance.

    Args:
        n: 1 for the first.
    """
    return str(1_000_000_000_000_000_000 + n)
