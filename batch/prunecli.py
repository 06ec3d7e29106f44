"""``imagebatch prune``'s flags, and the command that runs it (see :mod:`batch.prunerun`)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from .credentials import parse_endpoint, resolve_credentials
from .errors import UsageError
from .ownership import DEFAULT_POLICY
from .prune import PruneSettings
from .prunerun import PruneRequest, run_prune
from .snapshot import JobSource
from .sources import FORMATS

__all__ = ["add_prune_parser", "cmd_prune"]

_DEFAULTS = PruneSettings(policy=DEFAULT_POLICY, keep=1)


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _positive_int(text: str) -> int:
    return int(_number(text, int))


def _positive_float(text: str) -> float:
    return float(_number(text, float))


def add_prune_parser(sub: Any) -> None:
    """Add the ``prune`` sub-command to the sub-parsers of ``imagebatch``.

    Args:
        sub: what ``ArgumentParser.add_subparsers`` returned.
    """
    p = sub.add_parser(
        "prune",
        help="delete a policy's old images: keep the newest N AVAILABLE per instance",
        description="Keep the newest --keep AVAILABLE images of each instance's images tagged "
        "imagebatch-policy=NAME and delete the rest (see README, Retention). Images without that tag, "
        "in progress, the newest AVAILABLE one, and (without --orphans) those of instances not in the "
        "job list are never deleted.",
    )
    p.add_argument(
        "job_list", metavar="JOBLIST", nargs="?", help="the instances to prune (CSV, JSON or JSON Lines; - for stdin)"
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, help="job list format (default: from the name)")
    # None when not given: a resume tells a flag given again from one left out.
    p.add_argument("--policy", help="the policy whose images are pruned (its imagebatch-policy tag)")
    p.add_argument("--keep", type=_positive_int, help="AVAILABLE images kept per instance, the newest")
    p.add_argument(
        "--max-age",
        dest="max_age_days",
        type=_positive_float,
        metavar="DAYS",
        help="also delete AVAILABLE images older than this (never the newest one)",
    )
    for flag, dest, text in (
        ("--orphans", "orphans", "also prune instances that are not in the job list (all of them without JOBLIST)"),
        ("--prune-failed", "prune_failed", "also delete FAILED and UNAVAILABLE images of the policy"),
    ):
        p.add_argument(flag, dest=dest, action="store_const", const=True, help=text)
    p.add_argument("--dry-run", action="store_true", help="list and print the plan; delete and write nothing")
    p.add_argument("--out", type=Path, help="run directory (default: runs/prune-<UTC time>-<random>)")
    p.add_argument("--resume", action="store_true", help="continue the prune in --out")
    p.add_argument("--endpoint", help="API base URL (default: $ZENLAYER_ENDPOINT, a resume's own, or the real API)")
    for flag, dest, kind, text in (
        ("--rate", "rate", _positive_float, "API requests per second"),
        ("--backoff-base", "backoff_base", _positive_float, "first back-off window, seconds"),
        ("--backoff-cap", "backoff_cap", _positive_float, "largest back-off window, seconds"),
        ("--max-attempts", "max_attempts", _positive_int, "tries per image before it is recorded as failed"),
    ):
        p.add_argument(flag, dest=dest, type=kind, help=f"{text} (default: {getattr(_DEFAULTS, dest):g})")
    p.add_argument("--seed", type=int, help="seed of the back-off jitter (for reproducible tests)")


def _request(args: argparse.Namespace, now: datetime) -> PruneRequest:
    if args.dry_run and (args.resume or args.out is not None):
        raise UsageError("--dry-run writes nothing: leave out --out and --resume")
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out: the prune's run directory")
    resuming = args.resume and (args.out / "run.json").exists()
    if not resuming:
        if args.policy is None or args.keep is None:
            raise UsageError("prune needs --policy NAME and --keep N")
        if args.job_list is None and not args.orphans:
            raise UsageError("give a JOBLIST, or --orphans to prune every instance of the policy")
    given = {
        f: getattr(args, f)
        for f in (
            "policy",
            "keep",
            "max_age_days",
            "orphans",
            "prune_failed",
            "rate",
            "backoff_base",
            "backoff_cap",
            "max_attempts",
            "seed",
        )
        if getattr(args, f) is not None
    }
    settings = PruneSettings(**{"policy": DEFAULT_POLICY, "keep": 1, **given})
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or None
    if endpoint is not None:
        parse_endpoint(endpoint)
    resolved = resolve_credentials(os.environ, Path.home())
    for note in resolved.notes:
        print(f"imagebatch: note: {note}", file=sys.stderr)
    out = args.out
    if out is None and not args.dry_run:
        out = Path("runs") / f"prune-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    return PruneRequest(
        source=JobSource.from_argument(args.job_list) if args.job_list is not None else None,
        fmt=args.fmt,
        out_dir=out,
        settings=settings,
        explicit=frozenset(given),
        resume=args.resume,
        dry_run=args.dry_run,
        credentials=resolved.credentials,
        endpoint=endpoint,
        now=now,
    )


def cmd_prune(args: argparse.Namespace) -> int:
    """Run ``imagebatch prune``; return its exit code (0, 1 some images not deleted, 2, 3).

    Args:
        args: the parsed flags.
    """
    return anyio.run(run_prune, _request(args, datetime.now(UTC)))
