"""``imagebatch report RUN_DIR``: what happened in a run, for people or scripts.

Exit codes: 0 the report was made (whatever the run's outcome); 2 RUN_DIR is not a run
directory, or the list of failed jobs cannot be written (inside RUN_DIR, an existing file
without ``--force``, not a regular file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import UsageError
from .listwrite import check_target
from .output import add_output_option, print_json
from .report_render import render_markdown, render_table
from .runreport import build_report, check_copy, failed_instance_ids, open_run
from .text import clip

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` command.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="report on a run: outcomes, failures by code, retries, where the time went",
        description="Report on a run from its run directory: finished, stopped or killed. Reads only.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run directory (the run's --out)")
    add_output_option(parser, ("table", "json", "markdown"))
    parser.add_argument(
        "--failed-jobs",
        type=Path,
        metavar="FILE",
        help="write the failed jobs' rows of the run's job list to FILE (same format), for a retry run; "
        "never inside RUN_DIR, and an existing FILE only with --force",
    )
    parser.add_argument("--force", action="store_true", help="let --failed-jobs replace an existing FILE")
    parser.add_argument("--slowest", type=int, default=10, metavar="N", help="slowest jobs listed (default: 10)")
    return parser


def _check_failed_jobs_file(path: Path, run_dir: Path, *, force: bool) -> None:
    """Refuse a ``--failed-jobs`` file that would overwrite the run or another file by mistake.

    Inside RUN_DIR it could replace the run's copy of its job list (a ``--resume`` then refuses
    the changed checksum) or its journal; symlinks are followed, so a link into RUN_DIR is refused
    too, with or without ``--force``.

    Raises:
        UsageError: the file is inside RUN_DIR, exists without ``force``, or is not a regular file.
    """
    target = check_target(path, "--failed-jobs")
    if target.is_relative_to(run_dir.resolve()):
        msg = (
            f"--failed-jobs {clip(str(path))}: inside the run directory {clip(str(run_dir))}, whose files "
            "the run and --resume need; write the list elsewhere"
        )
        raise UsageError(msg)
    if target.exists() and not force:
        msg = f"--failed-jobs {clip(str(path))}: the file exists; give --force to replace it, or another name"
        raise UsageError(msg)


def main(args: argparse.Namespace) -> int:
    """Run ``imagebatch report``; returns the exit code.

    Args:
        args: the parsed command line.
    """
    files = open_run(args.run_dir)
    if args.failed_jobs is not None:
        _check_failed_jobs_file(args.failed_jobs, args.run_dir, force=args.force)
    report = build_report(files, slowest=max(0, args.slowest))
    if files.journal_problem is not None:
        print(f"imagebatch: warning: {files.journal_problem}", file=sys.stderr)
    if args.failed_jobs is not None:
        failed = failed_instance_ids(files)
        if failed:
            written = check_copy(files).write_subset(failed, args.failed_jobs)
            report["failedJobsFile"] = str(args.failed_jobs)
            print(f"imagebatch: {written} failed job(s) written to {args.failed_jobs}", file=sys.stderr)
        else:
            report["failedJobsFile"] = None
            print(f"imagebatch: no job failed; {args.failed_jobs} not written", file=sys.stderr)
    if args.output == "json":
        print_json(report)
    elif args.output == "markdown":
        sys.stdout.write(render_markdown(report))
    else:
        sys.stdout.write(render_table(report))
    return 0
