"""The fleet from the API instead of a file that goes stale: ``imagebatch inventory`` and
``imagebatch run --select``.

A :class:`~batch.selection.Selection` says which instances (zones, resource groups, states: any of; tags: all
of). DescribeInstances takes one zone, one resource group and one state a call, so the listing
asks once per combination of the values given, 1,000 instances a page: 10,000 instances of one
combination take 10 calls. The tags go to the API as they are (at most 20, as it allows).

:func:`write_job_list` writes what was found as a job list the project's own reader accepts
(checked with it before the file is put in place, atomically: :mod:`batch.listwrite`).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .answers import malformed
from .client import MAX_PAGE_SIZE, ZecClient
from .errors import ApiError, ThrottledError, UsageError
from .listwrite import write_checked_job_list
from .policy import Attempts, Call, Retry, RetryOptions, decide
from .selection import GroupBy, Selection, parse_selectors
from .sources import detect_format
from .text import clip

__all__ = ["WRITTEN_COLUMNS", "Instance", "Listing", "list_instances", "resolve_selection", "write_job_list"]

#: The job list's columns, in the order written. The reader knows no ``instanceName`` or
#: ``zoneId`` column (an unknown column is a problem there), so those two go only into the
#: ``--output json`` document; the zone is the ``group`` unless ``--group-by`` says otherwise.
WRITTEN_COLUMNS = ("instanceId", "resourceGroupId", "group", "tags")


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as DescribeInstances shows it (the fields a job list or a report needs)."""

    instance_id: str
    name: str
    zone_id: str
    resource_group_id: str
    status: str
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Instance | None:
        """Read an InstanceInfo object; ``None`` when it has no instance id."""
        ident = item.get("instanceId")
        if not isinstance(ident, str) or not ident:
            return None
        raw = item.get("tags")
        listed = raw.get("tags") if isinstance(raw, dict) else raw
        tags = tuple(
            (t["key"], t["value"])
            for t in (listed if isinstance(listed, list) else [])
            if isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value"), str)
        )
        return cls(
            ident,
            name=_text(item, "instanceName"),
            zone_id=_text(item, "zoneId"),
            resource_group_id=_text(item, "resourceGroupId"),
            status=_text(item, "status"),
            tags=tags,
        )

    def group(self, by: GroupBy) -> str:
        """The ``group`` column's value (empty when the instance lacks the tag grouped by).

        Args:
            by: what to group by.
        """
        if by.kind == "zone":
            return self.zone_id
        if by.kind == "resource-group":
            return self.resource_group_id
        return dict(self.tags).get(by.key, "")

    def to_record(self, by: GroupBy | None = None) -> dict[str, Any]:
        """The instance as a JSON object (``--output json``)."""
        record: dict[str, Any] = {
            "instanceId": self.instance_id,
            "instanceName": self.name,
            "zoneId": self.zone_id,
            "resourceGroupId": self.resource_group_id,
            "status": self.status,
            "tags": dict(self.tags),
        }
        if by is not None:
            record["group"] = self.group(by)
        return record


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Listing:
    """What a listing found (each instance once, by id) and the API calls it took."""

    instances: list[Instance]
    calls: int


Sleep = Callable[[float], Awaitable[None]]


async def list_instances(
    client: ZecClient,
    selection: Selection,
    *,
    page_size: int = MAX_PAGE_SIZE,
    attempts: int = 6,
    backoff_base: float = 1.0,
    backoff_cap: float = 30.0,
    rng: random.Random | None = None,
    sleep: Sleep = anyio.sleep,
) -> Listing:
    """Every instance the selection names, sorted by id.

    A page that fails for a reason worth retrying (throttled, 5xx, lost answer) is asked again
    alone after a back-off; a read changes nothing, so asking again is safe.

    Args:
        client: an open client.
        selection: which instances.
        page_size: instances a page (the API's maximum by default).
        attempts: failed tries of one page (429s aside) before giving up.
        backoff_base: first back-off window, seconds.
        backoff_cap: largest back-off window, seconds.
        rng: the back-off's dice.
        sleep: how to wait (tests pass a recorder).

    Raises:
        ApiError: the error that ended the listing.
    """
    dice = rng or random.Random()  # noqa: S311 - back-off jitter, not a secret
    found: dict[str, Instance] = {}
    calls = 0
    for query in selection.queries():
        page, seen = 1, 0
        while True:
            failures = throttled = 0
            while True:
                calls += 1
                try:
                    items, total = await client.describe_instances(page_num=page, page_size=page_size, **query)
                    break
                except ApiError as err:
                    throttled += isinstance(err, ThrottledError)
                    failures += not isinstance(err, ThrottledError)
                    # the run's one retry policy, as for the run's own image listing
                    verdict = decide(
                        err,
                        Attempts(
                            failures=failures,
                            throttled=throttled,
                            server_wait=err.retry_after or 0.0,
                            jitter=dice.random(),
                        ),
                        RetryOptions(backoff_base=backoff_base, backoff_cap=backoff_cap, lookup_attempts=attempts),
                        call=Call.LISTING,
                    )
                    if not isinstance(verdict, Retry):
                        raise
                    await sleep(verdict.delay)
            for item in items:
                instance = Instance.from_api(item)
                if instance is None:
                    raise malformed("DescribeInstances", "DescribeInstances listed an instance without an id", 200)
                # An instance made or removed between two pages moves the others by one: the
                # same instance may show twice, and is kept once.
                found.setdefault(instance.instance_id, instance)
            seen += len(items)
            if not items or seen >= total:
                break
            page += 1
    return Listing(sorted(found.values(), key=lambda i: i.instance_id), calls)


async def resolve_selection(client: ZecClient, selectors: Sequence[str], **listing: Any) -> list[Instance]:
    """``run --select``: the instances the selectors name, resolved once.

    Write them into the run directory with :func:`write_job_list`, so that ``--resume`` acts on
    the same instances even if their tags changed since.

    Args:
        client: an open client (its gate rate-limits the listing like any call).
        selectors: the ``--select`` values.
        listing: keyword arguments of :func:`list_instances`.

    Raises:
        UsageError: a selector is malformed, or no instance matches.
        ApiError: the listing failed.
    """
    selection = parse_selectors(selectors)
    result = await list_instances(client, selection, **listing)
    if not result.instances:
        shown = " ".join(f"--select {clip(s)}" for s in selectors)
        raise UsageError(f"no instance matches {shown}; nothing to image")
    return result.instances


def _csv_tags(instance: Instance) -> str:
    for key, value in instance.tags:
        if any(ch in key for ch in "=;") or ";" in value or key != key.strip() or value != value.strip():
            raise UsageError(
                f"instance {instance.instance_id}: tag {clip(key)}={clip(value)} cannot be written in a CSV "
                "job list (its tags column is key=value;key2=value2); write a .json or .jsonl list instead"
            )
    return ";".join(f"{k}={v}" for k, v in instance.tags)


def _render(instances: Sequence[Instance], fmt: str, by: GroupBy, with_tags: bool) -> bytes:
    columns = [c for c in WRITTEN_COLUMNS if with_tags or c != "tags"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for inst in instances:
            group = inst.group(by)
            values = {"instanceId": inst.instance_id, "resourceGroupId": inst.resource_group_id, "group": group}
            if with_tags:
                values["tags"] = _csv_tags(inst)
            writer.writerow([values[c] for c in columns])
        return out.getvalue().encode()
    lines = []
    for inst in instances:
        record: dict[str, Any] = {"instanceId": inst.instance_id}
        optional = {"resourceGroupId": inst.resource_group_id, "group": inst.group(by)}
        record.update({k: v for k, v in optional.items() if v})
        if with_tags and inst.tags:
            record["tags"] = [{"key": k, "value": v} for k, v in inst.tags]
        lines.append(json.dumps(record, ensure_ascii=False))
    if fmt == "jsonl":
        return "".join(line + "\n" for line in lines).encode()
    # One job a line: the reader takes a JSON list a window of lines at a time.
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def write_job_list(
    instances: Sequence[Instance],
    path: Path,
    *,
    group_by: GroupBy | None = None,
    with_tags: bool = False,
    fmt: str | None = None,
) -> None:
    """Write instances as a job list, checked with the project's reader, then put in place
    atomically (a crash leaves the old file or the new one, never half of one).

    Args:
        instances: what to write, in order.
        path: the file; its suffix says the format unless ``fmt`` does.
        group_by: what the ``group`` column holds (default: the zone).
        with_tags: write each instance's tags in the ``tags`` column (a run gives them to the
            new image).
        fmt: ``csv``, ``json`` or ``jsonl``.

    Raises:
        UsageError: the format cannot hold a value, the list would not validate, or the file
            cannot be written.
    """
    fmt = detect_format(path, fmt)
    write_checked_job_list(path, _render(instances, fmt, group_by or GroupBy(), with_tags), fmt, what="inventory")
