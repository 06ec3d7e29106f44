"""The flags of ``run`` (and ``plan``, which takes every run flag): argument types and groups.

Options a run keeps in ``run.json`` are :class:`~batch.options.RunOptions` fields; each flag's
``dest`` is the field's name, and a flag not given is absent (``SUPPRESS``), so a resume can
tell it from one given again.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .credentials import DEFAULT_ENDPOINT
from .naming import DEFAULT_NAME_TEMPLATE
from .options import MIN_RATE, RunOptions
from .output import add_output_option
from .sources import FORMATS

__all__ = [
    "OPTION_FIELDS",
    "add_job_list_args",
    "add_keep_args",
    "add_nightly_args",
    "add_run_args",
    "out_dir_arg",
]


def _number(text: str, kind: type[float] | type[int], *, low: float, strict: bool) -> float:
    """``text`` as a finite ``kind`` above ``low`` (``strict``) or at least ``low``, or an argparse error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a number' if kind is float else 'a whole number'}"
        ) from None
    if value != value or value == float("inf") or (value <= low if strict else value < low):
        bound = "a positive number" if strict else "zero or more" if low == 0 else f"at least {low:g}"
        raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
    return value


def _positive_float(text: str) -> float:
    return float(_number(text, float, low=0, strict=True))


def _non_negative_float(text: str) -> float:
    return float(_number(text, float, low=0, strict=False))


def _positive_int(text: str) -> int:
    return int(_number(text, int, low=1, strict=False))


def _non_negative_int(text: str) -> int:
    return int(_number(text, int, low=0, strict=False))


def add_job_list_args(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument(
        "job_list",
        metavar="JOBLIST",
        nargs="?" if optional else None,
        help="CSV, JSON or JSON Lines job list; - for standard input (needs --format)"
        + ("; with --resume it may be left out (the run keeps a copy)" if optional else ""),
    )
    # SUPPRESS: an option not given is absent, so a resume can tell it from one given again.
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help="job list format (default: from the name)",
    )
    parser.add_argument(
        "--name-template",
        default=argparse.SUPPRESS,
        help="image name for rows without imageName; fields: instanceId, resourceGroupId, run_id, date with a "
        "strftime spec; see jobs/README.md "
        f"(default: {DEFAULT_NAME_TEMPLATE.replace('%', '%%')})",
    )


def add_run_args(parser: argparse.ArgumentParser) -> None:
    d = RunOptions()

    def option(flag: str, dest: str, kind: Callable[[str], Any], text: str, into: Any = parser) -> None:
        default = getattr(d, dest)
        into.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=f"{text} (default: {default:g})")

    parser.add_argument("--out", type=out_dir_arg, help="run directory (default: runs/<UTC time>-<random>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (start it if it is new)")
    option("--concurrency", "concurrency", _positive_int, "requests in flight")
    option("--rate", "rate", _rate, f"API requests per second, all actions, at least {MIN_RATE:g}")
    option("--backoff-base", "backoff_base", _positive_float, "first back-off window, seconds")
    option("--backoff-cap", "backoff_cap", _positive_float, "largest back-off window, seconds")
    option("--busy-timeout", "busy_timeout", _non_negative_float, "give up on a busy instance after this many seconds")
    option("--max-attempts", "max_attempts", _positive_int, "tries per job on 5xx / network errors")
    option("--grace", "grace", _non_negative_float, "seconds requests in flight may take after SIGINT/SIGTERM")
    option("--connect-timeout", "connect_timeout", _positive_float, "seconds to connect")
    option("--timeout", "total_timeout", _positive_float, "seconds for a whole request")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="end each job when its image is AVAILABLE (or FAILED), not when it starts (default: off)",
    )
    option(
        "--poll-interval", "poll_interval", _positive_float, "with --wait: seconds between polls of all awaited images"
    )
    option(
        "--wait-timeout", "wait_timeout", _positive_float, "with --wait: fail a job whose image is not AVAILABLE sooner"
    )
    option(
        "--lookup-delay",
        "lookup_delay",
        _non_negative_float,
        "seconds before a lost CreateImage answer is checked by name (an API may list new images late)",
    )
    power = parser.add_argument_group("live fleets: stop -> image -> start")
    for flag, dest, text in (
        ("--stop-running", "stop_running", "stop RUNNING instances, image them, start them again (default: off)"),
        ("--leave-stopped", "leave_stopped", "with --stop-running: do not start them again (default: off)"),
        ("--force-stop", "force_stop", "with --stop-running: forced shutdown from the start (default: graceful first)"),
    ):
        power.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
    option("--stop-timeout", "stop_timeout", _positive_float, "seconds a graceful stop may take", power)
    option("--start-timeout", "start_timeout", _positive_float, "seconds to be RUNNING after a start", power)
    power.add_argument(
        "--max-stopped",
        dest="max_stopped",
        default=argparse.SUPPRESS,
        help="most instances stopped by this run at once: N or N%% of the list (default: 10%%, at least 1)",
    )
    power.add_argument(
        "--max-stopped-per-group",
        dest="max_stopped_per_group",
        type=_positive_int,
        default=argparse.SUPPRESS,
        help="most instances of one job-list 'group' stopped at once (default: none)",
    )
    halting = parser.add_argument_group("halting early")
    halting.add_argument(
        "--halt",
        default=argparse.SUPPRESS,
        metavar="fail=N|fail=P%",
        help="stop starting jobs when N jobs failed, or P%% of the ended ones (counted after --halt-min jobs); "
        "drain, exit 4 (default: never)",
    )
    halting.add_argument(
        "--halt-min",
        dest="halt_min",
        type=_non_negative_int,
        default=argparse.SUPPRESS,
        help="jobs that must have ended before a --halt percentage counts (default: 20)",
    )
    halting.add_argument(
        "--canary",
        type=_non_negative_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="run the first N jobs before any other; if one fails, halt before the rest (exit 4)",
    )
    add_keep_args(parser)
    parser.add_argument("--endpoint", help=f"API base URL (default: $ZENLAYER_ENDPOINT or {DEFAULT_ENDPOINT})")
    parser.add_argument(
        "--seed", type=int, default=argparse.SUPPRESS, help="seed of the back-off jitter (for reproducible tests)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument(
        "--verbose", action="store_true", help="also a line on stderr for each retry, failure and stop of the run"
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=30.0,
        help="seconds between progress lines when stderr is not a terminal (default: 30)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="progress lines off a terminal: text, or one JSON object a line (default: text)",
    )


def add_keep_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s retention flags: the policy tag, and ``--keep`` inside the run."""
    keep = parser.add_argument_group("retention: keep the newest N images per instance")
    keep.add_argument(
        "--policy",
        dest="policy",
        default=argparse.SUPPRESS,
        help="the imagebatch-policy tag of every image the run makes; --keep prunes only this policy's "
        "images; a resume keeps it (default: default)",
    )
    keep.add_argument(
        "--keep",
        dest="keep",
        type=_positive_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="once an instance's new image is AVAILABLE (implies --wait), delete its older images of the "
        "policy beyond the newest N AVAILABLE (default: none deleted)",
    )
    keep.add_argument(
        "--max-age",
        dest="max_age_days",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="DAYS",
        help="with --keep: also delete AVAILABLE images older than DAYS (never the newest)",
    )
    keep.add_argument(
        "--prune-failed",
        dest="prune_failed",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="with --keep: also delete the policy's FAILED and UNAVAILABLE images (default: off)",
    )


def add_nightly_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s flags for scheduled runs: the fleet by selection, metrics, JSON on stdout."""
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="instead of a JOBLIST: the instances the API lists by tag:K=V, zone:Z, resource-group:R, "
        "status:S (repeatable; resolved once, written into the run directory as its job list)",
    )
    parser.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="write Prometheus metrics here (node_exporter textfile collector; a .prom file), every 15 s "
        "and at the end",
    )
    parser.add_argument(
        "--job-name", default="imagebatch", help="the job_name label of the metrics (default: imagebatch)"
    )
    add_output_option(parser, ("table", "json"))


def out_dir_arg(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory (an empty --out would write into the current one)")
    return Path(text)


def _rate(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_RATE:
        raise argparse.ArgumentTypeError(f"{text!r} is below {MIN_RATE:g} requests a second; nothing would be sent")
    return value


#: RunOptions fields the command line can set (argparse dests of the same name).
OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions)) - {"resume"}
