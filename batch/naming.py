"""Image-name rules of the API and the ``--name-template`` that makes names.

The template looks like ``str.format`` but is not run by it: ``str.format`` resolves
``{date.__class__...}`` and ``{x[key]}`` by attribute and item access on live objects, which
reaches any module and ``os.environ`` (a secret could become an image name, or an error
message). Here a template is parsed once into literal text and fields from a fixed list, each
with a format spec checked against a small grammar, and rendered by our own loop over plain
strings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from .text import clip

__all__ = ["DEFAULT_NAME_TEMPLATE", "TEMPLATE_FIELDS", "NameTemplate", "image_name_problem"]

DEFAULT_NAME_TEMPLATE = "{instanceId}-{date:%Y%m%d}"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]*")
MIN_LEN, MAX_LEN = 2, 63

#: Job columns a template may use; the other columns make no sense in a name (a row with
#: ``imageName`` does not use the template, ``tags`` is not one value).
TEMPLATE_COLUMNS = ("instanceId", "resourceGroupId")
#: Every field a template may use.
TEMPLATE_FIELDS = (*TEMPLATE_COLUMNS, "date", "run_id")

# [[fill]align][width][.precision][s] of the format-spec mini-language, for strings only: no
# sign, '#', '0', grouping or '=' (they are for numbers), and no nested {fields}.
_TEXT_SPEC_RE = re.compile(r"(?:(?P<fill>[^{}])?(?P<align>[<>^]))?(?P<width>\d+)?(?:\.(?P<precision>\d+))?s?")
# strftime directives whose output is letters and digits only (locale names included); no
# flags or widths such as glibc's %-d or %10Y, which are not portable and can be made huge.
_DATE_DIRECTIVES = "aAbBdfGHIjmMpSuUVwWyYZ"
_DATE_SPEC_RE = re.compile(rf"(?:%[{_DATE_DIRECTIVES}]|[A-Za-z0-9._-])+")


def image_name_problem(name: str) -> str | None:
    """Say what is wrong with an image name under the API's rules, or ``None`` when it is fine.

    The rules: 2-63 characters of letters, digits, ``-``, ``_`` and ``.``, starting and ending
    with a letter or digit. A long name is quoted cut short (:func:`batch.text.clip`).

    Args:
        name: the candidate image name.
    """
    if not MIN_LEN <= len(name) <= MAX_LEN:
        return f"image name {clip(name)} is {len(name)} characters; it must be {MIN_LEN}-{MAX_LEN}"
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        return f"image name {clip(name)} has {clip(''.join(bad))}; only letters, digits, '-', '_' and '.' are allowed"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return f"image name {clip(name)} must start and end with a letter or digit"
    return None


@dataclass(frozen=True, slots=True)
class _Field:
    """One ``{name:spec}`` of a template, with its spec already checked and split."""

    name: str
    spec: str
    fill: str = " "
    align: str = "<"
    width: int = 0
    precision: int | None = None

    def pad(self, value: str) -> str:
        """Cut to the precision, then pad to the width, as ``format(str, spec)`` would."""
        if self.precision is not None:
            value = value[: self.precision]
        missing = self.width - len(value)
        if missing <= 0:
            return value
        if self.align == ">":
            return self.fill * missing + value
        if self.align == "^":
            left = missing // 2
            return self.fill * left + value + self.fill * (missing - left)
        return value + self.fill * missing


class NameTemplate:
    """A template for image names, ``str.format``-like but limited to a few fields.

    Fields: ``instanceId`` and ``resourceGroupId`` (the job's columns, ``""`` when empty),
    ``run_id``, and ``date`` (the run's start time, UTC) with a strftime spec made of the
    directives ``%a %A %b %B %d %f %G %H %I %j %m %M %p %S %u %U %V %w %W %y %Y %Z`` and name
    characters, e.g. ``{date:%Y%m%d}``. A text field may take ``[[fill]align][width][.precision]``
    (``{instanceId:.8}``, ``{instanceId:0>5}``; width and precision at most 63). Attribute and
    index access (``{date.year}``, ``{instanceId[0]}``), conversions (``!r``), positional fields
    (``{}``, ``{0}``) and fields nested in a spec are refused.

    Args:
        template: e.g. ``"{instanceId}-{date:%Y%m%d}"``.

    Raises:
        ValueError: the template is malformed or uses something not allowed; the message
            quotes the template (clipped) and never a value.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        parts: list[str | _Field] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise self._error(f"is malformed: {exc}") from exc
        for literal, name, spec, conversion in parsed:
            if literal:
                parts.append(literal)
            if name is not None:
                parts.append(self._field(name, spec or "", conversion))
        self._parts = tuple(parts)
        names = [p.name for p in self._parts if isinstance(p, _Field)]
        #: the fields the template uses, in order of first use
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._date_text: tuple[datetime, dict[str, str]] | None = None

    def _error(self, what: str) -> ValueError:
        return ValueError(f"--name-template {clip(self.template)} {what}")

    def _field(self, name: str, spec: str, conversion: str | None) -> _Field:
        if name == "" or name.isdigit():
            raise self._error("uses a positional field ({} or {0}); use named fields like {instanceId}")
        if "." in name or "[" in name:
            raise self._error(
                f"uses {clip(name, 40)}: attribute and index access is not allowed; "
                "cut a field with a spec such as {instanceId:.4}, and take date parts with {date:%Y}"
            )
        if name not in TEMPLATE_FIELDS:
            raise self._error(f"has unknown field {clip(name, 40)}; known: {', '.join(sorted(TEMPLATE_FIELDS))}")
        if conversion is not None:
            # Formatter.parse allows one character here; every conversion is refused, even !s.
            raise self._error(f"uses the conversion !{conversion} in {{{name}}}; drop it")
        if "{" in spec or "}" in spec:
            raise self._error(f"nests a field inside the spec of {{{name}}}; specs are plain text")
        if name == "date":
            if not _DATE_SPEC_RE.fullmatch(spec):
                raise self._error(
                    f"has the date spec {clip(spec, 40)}; use strftime directives "
                    f"{' '.join('%' + c for c in _DATE_DIRECTIVES)} and letters, digits, '-', '_', '.', "
                    "e.g. {date:%Y%m%d}"
                )
            return _Field(name, spec)
        match = _TEXT_SPEC_RE.fullmatch(spec)
        width = int(match["width"] or 0) if match else 0
        precision = int(match["precision"]) if match and match["precision"] else None
        if match is None or width > MAX_LEN or (precision or 0) > MAX_LEN:
            raise self._error(
                f"has the spec {clip(spec, 40)} on {{{name}}}; a text field takes [[fill]align][width][.precision] "
                f"with width and precision at most {MAX_LEN}, e.g. {{{name}:.8}}"
            )
        return _Field(
            name, spec, fill=match["fill"] or " ", align=match["align"] or "<", width=width, precision=precision
        )

    def render(self, row: Mapping[str, str], *, date: datetime, run_id: str) -> str:
        """Fill the template for one job.

        Args:
            row: the job's columns (a missing or empty column renders as ``""``).
            date: the run's start time.
            run_id: the run's id.
        """
        if self._date_text is None or self._date_text[0] is not date:
            # The date is the run's, the same for every job: format each spec once per run.
            self._date_text = (date, {})
        dates = self._date_text[1]
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            elif part.name == "date":
                text = dates.get(part.spec)
                if text is None:
                    text = dates[part.spec] = date.strftime(part.spec)
                out.append(text)
            else:
                value = run_id if part.name == "run_id" else row.get(part.name) or ""
                out.append(part.pad(value))
        return "".join(out)
