"""Which instances to act on: ``--zone``/``--tag``/... flags and ``--select`` selectors, checked.

Pure: parsing and checking only; :mod:`batch.inventory` lists what a selection names.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .text import clip

__all__ = [
    "INSTANCE_STATES",
    "MAX_TAG_FILTERS",
    "GroupBy",
    "Selection",
    "build_selection",
    "parse_group_by",
    "parse_selectors",
]

#: Instance states the API documents (its enum, plus Terraform's and the start docs' extras).
INSTANCE_STATES = frozenset(
    {
        "DEPLOYING",
        "REBUILDING",
        "REBOOT",
        "RUNNING",
        "STOPPED",
        "BOOTING",
        "STARTING",
        "RELEASING",
        "STOPPING",
        "RECYCLE",
        "RECYCLING",
        "CREATE_FAILED",
        "IMAGING",
        "RESIZING",
        "PENDING",
        "REINSTALL_FAILED",
    }
)
#: Tags one Describe call may filter on (the API's limit).
MAX_TAG_FILTERS = 20
_TAG_TEXT_MAX = 64
_SELECTOR_KINDS = ("tag", "zone", "resource-group", "status")
_SELECTOR_FORMS = "tag:KEY=VALUE, zone:ZONE, resource-group:GROUP or status:STATE"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which instances: any of the zones, resource groups and states given (none given: all),
    holding all of the tags.

    Args:
        zones: zone ids, e.g. ``SEL-A``.
        resource_groups: resource group ids.
        states: instance states, e.g. ``RUNNING``.
        tags: ``(key, value)`` pairs, at most :data:`MAX_TAG_FILTERS`.
    """

    zones: tuple[str, ...] = ()
    resource_groups: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    def queries(self) -> list[dict[str, Any]]:
        """One DescribeInstances filter set per combination of zone, group and state."""
        combos = itertools.product(self.zones or (None,), self.resource_groups or (None,), self.states or (None,))
        return [
            {"zone_id": zone, "resource_group_id": group, "status": state, "tags": self.tags}
            for zone, group, state in combos
        ]

    def describe(self) -> dict[str, Any]:
        """The selection as a JSON object (for ``--output json`` and messages)."""
        return {
            "zones": list(self.zones),
            "resourceGroups": list(self.resource_groups),
            "states": list(self.states),
            "tags": {k: v for k, v in self.tags},
        }


def _value(text: str, where: str, what: str) -> str:
    value = text.strip()
    if not value:
        raise UsageError(f"{where}: the {what} is empty")
    if any(not ch.isprintable() for ch in value):
        raise UsageError(f"{where}: the {what} {clip(value)} has a control character in it")
    return value


def _tag(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"{where}: {clip(text)} is not KEY=VALUE")
    key, value = key.strip(), value.strip()
    if not 1 <= len(key) <= _TAG_TEXT_MAX or not 1 <= len(value) <= _TAG_TEXT_MAX:
        raise UsageError(f"{where}: tag keys and values are 1-{_TAG_TEXT_MAX} characters ({clip(text)})")
    return key, value


def _states(text: str, where: str) -> list[str]:
    states = [s.strip().upper() for s in text.split(",")]
    for state in states:
        if state not in INSTANCE_STATES:
            known = ", ".join(sorted(INSTANCE_STATES))
            raise UsageError(f"{where}: {clip(state)} is not an instance state (known: {known})")
    return states


def build_selection(
    *,
    zones: Iterable[tuple[str, str]] = (),
    resource_groups: Iterable[tuple[str, str]] = (),
    states: Iterable[tuple[str, str]] = (),
    tags: Iterable[tuple[str, str]] = (),
) -> Selection:
    """A checked :class:`Selection` from raw texts, each with the place it came from.

    Args:
        zones: ``(text, where)`` pairs, ``where`` naming the flag (``--zone``) for messages.
        resource_groups: likewise.
        states: likewise; each text may hold several states separated by commas.
        tags: likewise, ``KEY=VALUE`` texts.

    Raises:
        UsageError: naming the flag or selector and what is wrong.
    """
    pairs: dict[str, tuple[str, str]] = {}  # key -> (value, where)
    for text, where in tags:
        key, value = _tag(text, where)
        if key in pairs and pairs[key][0] != value:
            raise UsageError(
                f"{where}: tag {clip(key)} is also asked to be {clip(pairs[key][0])} ({pairs[key][1]}); "
                "an instance holds one value per key, so nothing would match"
            )
        pairs.setdefault(key, (value, where))
    if len(pairs) > MAX_TAG_FILTERS:
        raise UsageError(
            f"{len(pairs)} tags given; the API filters on at most {MAX_TAG_FILTERS} tags a call: "
            "select with fewer tags (a zone or resource group narrows too)"
        )
    return Selection(
        zones=tuple(dict.fromkeys(_value(t, w, "zone") for t, w in zones)),
        resource_groups=tuple(dict.fromkeys(_value(t, w, "resource group") for t, w in resource_groups)),
        states=tuple(dict.fromkeys(s for t, w in states for s in _states(t, w))),
        tags=tuple((k, v) for k, (v, _) in pairs.items()),
    )


def parse_selectors(texts: Sequence[str]) -> Selection:
    """``--select`` values: ``tag:KEY=VALUE``, ``zone:ZONE``, ``resource-group:GROUP``,
    ``status:STATE[,STATE...]``.

    Args:
        texts: the values, one a selector.

    Raises:
        UsageError: for any other form, naming the selector.
    """
    found: dict[str, list[tuple[str, str]]] = {kind: [] for kind in _SELECTOR_KINDS}
    for text in texts:
        kind, sep, value = text.partition(":")
        where = f"--select {clip(text)}"
        if not sep or kind.strip() not in found:
            raise UsageError(f"{where}: expected {_SELECTOR_FORMS}")
        found[kind.strip()].append((value, where))
    return build_selection(
        zones=found["zone"], resource_groups=found["resource-group"], states=found["status"], tags=found["tag"]
    )


@dataclass(frozen=True, slots=True)
class GroupBy:
    """What the job list's ``group`` column holds: ``zone``, ``resource-group`` or ``tag`` ``key``."""

    kind: str = "zone"
    key: str = ""

    def __str__(self) -> str:
        return f"tag:{self.key}" if self.kind == "tag" else self.kind


def parse_group_by(text: str) -> GroupBy:
    """``--group-by``: ``zone``, ``resource-group`` or ``tag:KEY``.

    Args:
        text: the flag's value.
    """
    if text in ("zone", "resource-group"):
        return GroupBy(text)
    kind, sep, key = text.partition(":")
    if kind == "tag" and sep and 1 <= len(key.strip()) <= _TAG_TEXT_MAX:
        return GroupBy("tag", key.strip())
    raise UsageError(f"--group-by {clip(text)}: expected zone, resource-group or tag:KEY")
