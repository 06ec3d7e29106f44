"""Ownership tags: how an image says that imagebatch made it, for which policy and instance, and when.

Retention deletes only images that carry this policy's tag, so these tags are what keeps a
person's image, another policy's, or a look-alike name safe. The API's image record has no
creation time, so ``imagebatch-created`` (a sortable UTC stamp) is what orders them.

Tag keys and values follow the API's Tag type: 1-64 characters each. imagebatch's keys and
policy names keep to letters, digits, ``-`` and ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from .text import clip

__all__ = [
    "CREATED_KEY",
    "DEFAULT_POLICY",
    "INSTANCE_KEY",
    "OWNERSHIP_KEYS",
    "POLICY_KEY",
    "RUN_KEY",
    "STAMP_FORMAT",
    "TAG_MAX",
    "format_created",
    "ownership_problem",
    "ownership_tags",
    "parse_created",
    "policy_problem",
    "reserved_tag_problem",
]

#: The policy that made the image (``--policy NAME``).
POLICY_KEY = "imagebatch-policy"
#: The source instance's id.
INSTANCE_KEY = "imagebatch-instance"
#: When the image was made: UTC, ``20261130T052356Z`` (sorts as text).
CREATED_KEY = "imagebatch-created"
#: The run that made it.
RUN_KEY = "imagebatch-run"
#: Every key imagebatch sets itself; a job list may not set them.
OWNERSHIP_KEYS = (POLICY_KEY, INSTANCE_KEY, CREATED_KEY, RUN_KEY)
#: The policy of a run without ``--policy``.
DEFAULT_POLICY = "default"
#: ``imagebatch-created``'s format (strftime).
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: The API's bound on a tag key's and a tag value's length, characters.
TAG_MAX = 64

_POLICY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STAMP = re.compile(r"\d{8}T\d{6}Z")


def format_created(moment: datetime) -> str:
    """``imagebatch-created``'s value for a moment: UTC, to the second (``20261130T052356Z``).

    Args:
        moment: an aware datetime (any zone; it is converted to UTC).

    Raises:
        ValueError: ``moment`` is naive: its zone, and so the stamp, would be a guess.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"the creation time {moment.isoformat()} has no time zone; give an aware datetime"
        raise ValueError(msg)
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_created(text: str) -> datetime | None:
    """The moment an ``imagebatch-created`` value names, or ``None`` when it is not a stamp.

    Args:
        text: the tag's value.
    """
    if not _STAMP.fullmatch(text):
        return None
    try:
        return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: the shape is right, the date is not
        return None


def policy_problem(name: str) -> str | None:
    """What is wrong with a policy name (``--policy``), or ``None`` when it is fine.

    Args:
        name: the policy name.
    """
    if _POLICY.fullmatch(name):
        return None
    return f"--policy {clip(name)} must be 1-{TAG_MAX} letters, digits, '-' or '_'"


def _value_problem(key: str, value: str) -> str | None:
    if not 1 <= len(value) <= TAG_MAX:
        return f"tag {key} would be {clip(value)}: the API takes tag values of 1-{TAG_MAX} characters"
    return None


def ownership_problem(policy: str, instance_id: str, run_id: str) -> str | None:
    """Why an image of this instance cannot carry the ownership tags, or ``None`` when it can.

    For the job-list validation of a run with retention: an instance id (or run id) longer than
    a tag value may be would make CreateImage fail with a parameter error.

    Args:
        policy: the policy name.
        instance_id: the source instance.
        run_id: the run's id.
    """
    problem = policy_problem(policy)
    if problem is not None:
        return problem
    return _value_problem(INSTANCE_KEY, instance_id) or _value_problem(RUN_KEY, run_id)


def ownership_tags(policy: str, instance_id: str, created: datetime, run_id: str) -> list[tuple[str, str]]:
    """The four ownership tags of an image, in :data:`OWNERSHIP_KEYS` order.

    Args:
        policy: the policy name (``--policy``).
        instance_id: the source instance.
        created: when the image is made (aware; stored as UTC to the second).
        run_id: the run's id.

    Raises:
        ValueError: a value the API would refuse (see :func:`ownership_problem`), or a naive
            ``created``.
    """
    problem = ownership_problem(policy, instance_id, run_id)
    if problem is not None:
        raise ValueError(problem)
    return [
        (POLICY_KEY, policy),
        (INSTANCE_KEY, instance_id),
        (CREATED_KEY, format_created(created)),
        (RUN_KEY, run_id),
    ]


def reserved_tag_problem(tags: Iterable[tuple[str, str]]) -> str | None:
    """What is wrong when a job list's own tags set one of imagebatch's keys, else ``None``.

    A job that set ``imagebatch-policy`` itself could make an image retention would take for
    another policy's, or hide one from it: these keys are imagebatch's alone.

    Args:
        tags: the job's ``(key, value)`` pairs.
    """
    taken = [key for key, _ in tags if key in OWNERSHIP_KEYS]
    if not taken:
        return None
    names = ", ".join(dict.fromkeys(taken))
    return f"tag key {names} is reserved: imagebatch sets {', '.join(OWNERSHIP_KEYS)} itself; rename the tag"
