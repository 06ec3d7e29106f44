"""``imagebatch inventory``: list instances with DescribeInstances into a job list.

Exit codes: 0 the list was written; 1 no instance matches (nothing written); 2 bad input
(flag, credentials, output file); 3 the API refused or failed the listing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from .client import ZecClient
from .credentials import DEFAULT_ENDPOINT, Credentials, resolve_credentials
from .errors import UsageError
from .inventory import Listing, list_instances, write_job_list
from .listwrite import check_target
from .output import add_output_option, cell, print_json
from .selection import MAX_TAG_FILTERS, Selection, build_selection, parse_group_by
from .sources import FORMATS, detect_format
from .text import clip

__all__ = ["EXIT_NONE_FOUND", "add_parser", "main"]

#: No instance matches the filters.
EXIT_NONE_FOUND = 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``inventory`` command.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "inventory",
        help="list instances (DescribeInstances) into a job list",
        description="List instances with DescribeInstances and write them as a job list. Instances in any of the "
        "zones, resource groups and states given, holding all the tags given; nothing given: every instance.",
    )
    parser.add_argument("--zone", action="append", default=[], metavar="ZONE", help="a zone (repeatable)")
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a tag the instances hold (repeatable, all must hold; at most {MAX_TAG_FILTERS})",
    )
    parser.add_argument(
        "--resource-group", action="append", default=[], metavar="GROUP", help="a resource group (repeatable)"
    )
    parser.add_argument(
        "--status", action="append", default=[], metavar="STATE[,STATE]", help="instance states, e.g. RUNNING,STOPPED"
    )
    parser.add_argument(
        "--group-by",
        default="zone",
        metavar="zone|resource-group|tag:KEY",
        help="what the job list's group column holds, for --max-stopped-per-group (default: zone)",
    )
    parser.add_argument(
        "--with-tags", action="store_true", help="write each instance's tags in the tags column (given to its image)"
    )
    parser.add_argument("-o", "--out-file", dest="out_file", type=Path, required=True, metavar="FILE", help="job list")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, help="job list format (default: from the name)")
    parser.add_argument("--endpoint", help=f"API base URL (default: $ZENLAYER_ENDPOINT or {DEFAULT_ENDPOINT})")
    add_output_option(parser)
    return parser


def _selection(args: argparse.Namespace) -> Selection:
    def placed(flag: str, values: list[str]) -> list[tuple[str, str]]:
        return [(v, f"{flag} {clip(v)}") for v in values]

    return build_selection(
        zones=placed("--zone", args.zone),
        resource_groups=placed("--resource-group", args.resource_group),
        states=placed("--status", args.status),
        tags=placed("--tag", args.tag),
    )


async def _list(endpoint: str, credentials: Credentials, selection: Selection) -> Listing:
    async with ZecClient(endpoint, credentials, pool_size=1) as client:
        return await list_instances(client, selection)


def main(args: argparse.Namespace) -> int:
    """Run ``imagebatch inventory``; returns the exit code.

    Args:
        args: the parsed command line.
    """
    selection = _selection(args)
    group_by = parse_group_by(args.group_by)
    out: Path = args.out_file
    fmt = detect_format(out, args.fmt)
    if not out.parent.is_dir():  # say so before any API call
        raise UsageError(f"-o {clip(str(out))}: the directory {clip(str(out.parent))} does not exist")
    check_target(out, "-o")
    endpoint = args.endpoint or os.environ.get("ZENLAYER_ENDPOINT") or DEFAULT_ENDPOINT
    resolved = resolve_credentials(os.environ, Path.home())
    for note in resolved.notes:
        print(f"imagebatch: note: {note}", file=sys.stderr)
    listing = anyio.run(_list, endpoint, resolved.credentials, selection)
    found = listing.instances
    document = {
        "file": str(out) if found else None,
        "format": fmt,
        "selection": selection.describe(),
        "groupBy": str(group_by),
        "withTags": args.with_tags,
        "apiCalls": listing.calls,
        "count": len(found),
        "byGroup": dict(sorted(Counter(i.group(group_by) for i in found).items())),
        "byStatus": dict(sorted(Counter(i.status for i in found).items())),
        "instances": [i.to_record(group_by) for i in found],
    }
    if not found:
        print(f"imagebatch: no instance matches; {out} not written ({listing.calls} API calls)", file=sys.stderr)
        if args.output == "json":
            print_json(document)
        return EXIT_NONE_FOUND
    write_job_list(found, out, group_by=group_by, with_tags=args.with_tags, fmt=fmt)
    if args.output == "json":
        print_json(document)
        return 0
    print(f"{out}: {len(found)} instances ({listing.calls} API calls)")
    # Zones, resource groups and tag values are the API's text: escaped, cut, never raw on a terminal.
    header = f"group ({cell(group_by)})"
    groups = [(cell(group) if group else "(none)", count) for group, count in document["byGroup"].items()]
    width = max(len(header), *(len(g) for g, _ in groups))
    print(f"  {header:<{width}}  instances")
    for group, count in groups:
        print(f"  {group:<{width}}  {count}")
    return 0
