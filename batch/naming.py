"""Image-name rules of the API and the ``--name-template`` that makes names."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["DEFAULT_NAME_TEMPLATE", "NameTemplate", "image_name_problem"]

DEFAULT_NAME_TEMPLATE = "{instanceId}-{date:%Y%m%d}"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]*")
MIN_LEN, MAX_LEN = 2, 63


def image_name_problem(name: str) -> str | None:
    """Say what is wrong with an image name under the API's rules, or ``None`` when it is fine.

    The rules: 2-63 characters of letters, digits, ``-``, ``_`` and ``.``, starting and ending
    with a letter or digit.

    Args:
        name: the candidate image name.
    """
    if not MIN_LEN <= len(name) <= MAX_LEN:
        return f"image name {name!r} is {len(name)} characters; it must be {MIN_LEN}-{MAX_LEN}"
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        return f"image name {name!r} has {''.join(bad)!r}; only letters, digits, '-', '_' and '.' are allowed"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"image name {name!r} must start and end with a letter or digit"
    return None


class NameTemplate:
    """A ``str.format`` template for image names.

    Fields: any job column (``instanceId``, ``resourceGroupId``, ...), ``date`` (the run's
    start time, UTC; use a format spec such as ``{date:%Y%m%d}``) and ``run_id``.

    Args:
        template: e.g. ``"{instanceId}-{date:%Y%m%d}"``.
        columns: the job columns the template may use.

    Raises:
        ValueError: the template is malformed or names an unknown field.
    """

    def __init__(self, template: str, columns: set[str]) -> None:
        self.template = template
        fields: list[str] = []
        try:
            for _, name, _spec, _conv in string.Formatter().parse(template):
                if name is not None:
                    fields.append(name)
        except ValueError as exc:
            msg = f"--name-template {template!r} is malformed: {exc}"
            raise ValueError(msg) from exc
        allowed = columns | {"date", "run_id"}
        for name in fields:
            if name == "" or name.isdigit():
                msg = f"--name-template {template!r}: use named fields like {{instanceId}}, not {{}}"
                raise ValueError(msg)
            root = re.split(r"[.\[]", name, maxsplit=1)[0]
            if root not in allowed:
                msg = f"--name-template {template!r}: unknown field {root!r}; known: {', '.join(sorted(allowed))}"
                raise ValueError(msg)
        self.fields = frozenset(fields)
        roots = {re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields}  # {instanceId[0]} reads instanceId
        self._columns = tuple(sorted(roots - {"date", "run_id"}))
        self._date: _FormattedOnce | None = None

    def render(self, row: Mapping[str, Any], *, date: datetime, run_id: str) -> str:
        """Fill the template for one job row.

        Args:
            row: the job's columns (missing optional columns render as ``""``).
            date: the run's start time.
            run_id: the run's id.
        """
        if self._date is None or self._date.value is not date:
            self._date = _FormattedOnce(date)
        values = {f: row.get(f) or "" for f in self._columns}
        return self.template.format_map({**values, "date": self._date, "run_id": run_id})


class _FormattedOnce:
    """Formats a value once per format spec: the run's date is the same for every job."""

    __slots__ = ("_cache", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._cache: dict[str, str] = {}

    def __format__(self, spec: str) -> str:
        text = self._cache.get(spec)
        if text is None:
            text = self._cache[spec] = format(self.value, spec)
        return text

    def __getattr__(self, name: str) -> Any:  # {date.year} and the like
        return getattr(self.value, name)
