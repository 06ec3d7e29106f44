"""``--output``: what a command prints on stdout. ``json`` is one JSON document for scripts;
messages and progress then go to stderr only, so stdout parses whole."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .sources import Validation

__all__ = ["add_output_option", "print_json", "validation_record"]


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
        document: plain JSON values.
        stream: where (default: stdout).
    """
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    out.flush()


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
