"""``--output``: what a command prints on stdout. ``json`` is one JSON document for scripts;
messages and progress then go to stderr only, so stdout parses whole."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .sources import Validation

__all__ = ["add_output_option", "cell", "print_json", "validation_record"]

#: longest text a table cell keeps (request ids, codes and messages come from the API)
CELL_LIMIT = 80


def add_output_option(parser: argparse.ArgumentParser, choices: Sequence[str] = ("table", "json")) -> None:
    """Add ``--output`` (default: the first choice).

    Args:
        parser: the command's parser.
        choices: the renderings it offers; ``json`` is one JSON document on stdout.
    """
    parser.add_argument(
        "--output",
        choices=list(choices),
        default=choices[0],
        help=f"what stdout gets (default: {choices[0]}); json: one JSON document, messages on stderr",
    )


def print_json(document: Any, stream: TextIO | None = None) -> None:
    """Write one JSON document and a newline.

    Args:
        document: plain JSON values (a NaN or an infinity, read from a damaged file, is written
            as ``null``: stdout always parses).
        stream: where (default: stdout).
    """
    out = stream or sys.stdout
    try:
        text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or Infinity from a damaged file: no JSON reader takes them
        text = json.dumps(_finite(document), indent=2, ensure_ascii=False)
    out.write(text + "\n")
    out.flush()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite number made ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def cell(value: object, limit: int = CELL_LIMIT) -> str:
    """Text from outside (the API, a run's files) for a table cell on a terminal or in Markdown.

    A control character (ESC, BEL, a newline, a bidi override) would drive the terminal or start
    a new Markdown row: each is shown escaped (``\\x1b``, ``\\n``), as the run's summary shows
    them. Text longer than ``limit`` is cut, with its full size said (``abc…(10240 bytes)``);
    ``--output json`` keeps every value exact.

    Args:
        value: what to show (``str()`` of anything else).
        limit: longest text kept, in characters, after escaping.
    """
    text = value if isinstance(value, str) else str(value)
    shown = text if text.isprintable() else "".join(_escape(ch) for ch in text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}…({len(text.encode('utf-8', 'replace'))} bytes)"


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def validation_record(label: str, result: Validation) -> dict[str, Any]:
    """``validate --output json``: the list's name, whether it is good, its jobs and every problem.

    Args:
        label: the job list as the user named it.
        result: what the validation found.
    """
    return {
        "file": label,
        "ok": result.ok,
        "jobs": result.jobs,
        "problems": list(result.problems),
        "warnings": list(result.warnings),
    }
