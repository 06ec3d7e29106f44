"""Retention rules: which of a policy's images to keep and which to delete. Pure, no I/O.

From the account's images (one listing) and the options, :func:`plan_retention` decides, per
instance, what is kept and what is deleted, each with its reason. The rules, safest first:

* an image without this policy's ``imagebatch-policy`` tag is never looked at (a person's
  image, another policy's, a look-alike name);
* an image of the policy without a readable ``imagebatch-instance`` or ``imagebatch-created``
  tag is kept: it cannot be grouped or ordered;
* an instance not in the job list is left alone unless ``orphans`` is asked for;
* with ``fresh`` (``run --keep``), an instance whose new image failed or was not made in this
  run is left alone ("keep the last N good");
* CREATING, SYNCING and PROCESSING images are kept (the API refuses to delete them anyway);
  DELETING ones are already going and count for nothing;
* the newest N AVAILABLE images are kept, and the newest AVAILABLE one always is, even with
  ``max_age``; older AVAILABLE ones are deleted beyond N or, with ``max_age``, when older;
* FAILED and UNAVAILABLE images are deleted only with ``prune_failed``;
* an image in a state this version does not know is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .ownership import CREATED_KEY, INSTANCE_KEY, POLICY_KEY, parse_created

__all__ = [
    "FAILED_STATES",
    "IN_PROGRESS_STATES",
    "ImageDecision",
    "ImageRecord",
    "InstancePlan",
    "RetentionOptions",
    "RetentionPlan",
    "plan_retention",
]

#: States in which an image is being made or copied: never deleted.
IN_PROGRESS_STATES = frozenset({"CREATING", "SYNCING", "PROCESSING"})
#: States of an image that will never be usable: deleted only with ``prune_failed``.
FAILED_STATES = frozenset({"FAILED", "UNAVAILABLE"})
AVAILABLE = "AVAILABLE"
DELETING = "DELETING"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One custom image as the listing shows it.

    Args:
        image_id: the image's id.
        name: its name.
        status: ``imageStatus``.
        tags: its ``(key, value)`` tags.
    """

    image_id: str
    name: str
    status: str
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> ImageRecord | None:
        """Read a DescribeCustomImages item (``None`` when it has no usable ``imageId``).

        Args:
            item: one ``dataSet`` object; ``tags`` is ``{"tags": [{"key", "value"}]}``.
        """
        image_id = item.get("imageId")
        if not isinstance(image_id, str) or not image_id:
            return None
        raw = item.get("tags")
        listed = raw.get("tags") if isinstance(raw, dict) else raw
        tags: list[tuple[str, str]] = []
        for tag in listed if isinstance(listed, list) else ():
            if isinstance(tag, dict) and isinstance(tag.get("key"), str) and isinstance(tag.get("value"), str):
                tags.append((tag["key"], tag["value"]))
        name, status = item.get("imageName"), item.get("imageStatus")
        return cls(image_id, name if isinstance(name, str) else "", str(status or ""), tuple(tags))

    def tag(self, key: str) -> str | None:
        """The value of tag ``key``, or ``None``.

        Args:
            key: the tag key.
        """
        for k, v in self.tags:
            if k == key:
                return v
        return None

    @property
    def created(self) -> datetime | None:
        """When imagebatch made it (its ``imagebatch-created`` tag), ``None`` when unreadable."""
        value = self.tag(CREATED_KEY)
        return parse_created(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class RetentionOptions:
    """What to keep.

    Args:
        policy: the policy whose images are considered (``--policy``).
        keep: AVAILABLE images kept per instance, the newest (``--keep``, at least 1).
        now: the time ``max_age`` counts back from.
        max_age: AVAILABLE images older than this are deleted too (never the newest one).
        prune_failed: delete FAILED and UNAVAILABLE images of the policy.
        orphans: also prune instances that are not in ``instance_ids``.
        instance_ids: the job list's instances (empty: no job list).
        fresh: ``run --keep``: the instances that got a new AVAILABLE image in this run; any
            other instance is left alone. ``None`` (``prune``): no such condition.
    """

    policy: str
    keep: int
    now: datetime
    max_age: timedelta | None = None
    prune_failed: bool = False
    orphans: bool = False
    instance_ids: frozenset[str] = frozenset()
    fresh: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.keep < 1:
            msg = f"keep must be at least 1 (the newest AVAILABLE image is never deleted), not {self.keep}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ImageDecision:
    """One image's fate.

    Args:
        image: the image.
        delete: whether to delete it.
        reason: why, for the plan table and the results.
    """

    image: ImageRecord
    delete: bool
    reason: str


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """What happens to one instance's images.

    Args:
        instance_id: the instance (its images' ``imagebatch-instance`` tag).
        decisions: one per image of the policy (DELETING ones aside), newest first.
        note: why nothing of this instance is deleted, when a whole-instance rule says so.
        in_job_list: whether the instance is in the job list.
    """

    instance_id: str
    decisions: tuple[ImageDecision, ...]
    note: str | None = None
    in_job_list: bool = True

    @property
    def kept(self) -> tuple[ImageDecision, ...]:
        """The images kept."""
        return tuple(d for d in self.decisions if not d.delete)

    @property
    def deleted(self) -> tuple[ImageDecision, ...]:
        """The images to delete."""
        return tuple(d for d in self.decisions if d.delete)


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The plan for every instance of the policy.

    Args:
        instances: per instance, in instance-id order.
        unattributed: images of the policy kept because they have no usable
            ``imagebatch-instance`` tag.
        deleting: ids of the policy's images already DELETING.
    """

    instances: tuple[InstancePlan, ...]
    unattributed: tuple[ImageDecision, ...] = ()
    deleting: tuple[str, ...] = field(default=())

    def deletions(self) -> list[tuple[str, str]]:
        """Every ``(image_id, instance_id)`` to delete, instance by instance."""
        return [(d.image.image_id, p.instance_id) for p in self.instances for d in p.deleted]


def plan_retention(images: Iterable[ImageRecord], options: RetentionOptions) -> RetentionPlan:
    """Decide, from one listing, what to keep and what to delete (see the module's rules).

    Args:
        images: the account's images (any; those of other policies are ignored).
        options: the policy, ``keep`` and the other knobs.
    """
    grouped: dict[str, list[ImageRecord]] = {}
    unattributed: list[ImageDecision] = []
    deleting: list[str] = []
    for image in images:
        if image.tag(POLICY_KEY) != options.policy:
            continue
        if image.status == DELETING:
            deleting.append(image.image_id)
            continue
        instance_id = image.tag(INSTANCE_KEY)
        if not instance_id:
            unattributed.append(ImageDecision(image, False, f"no {INSTANCE_KEY} tag: never deleted"))
            continue
        grouped.setdefault(instance_id, []).append(image)
    plans = tuple(_plan_instance(i, grouped[i], options) for i in sorted(grouped))
    return RetentionPlan(plans, tuple(unattributed), tuple(sorted(deleting)))


def _plan_instance(instance_id: str, images: list[ImageRecord], options: RetentionOptions) -> InstancePlan:
    # Newest first by stamp (equal stamps by id, so the order never depends on the listing's);
    # unstamped ones last.
    stamped = sorted((i for i in images if i.created is not None), key=lambda i: (i.created, i.image_id), reverse=True)
    ordered = stamped + sorted((i for i in images if i.created is None), key=lambda i: i.image_id)
    in_list = instance_id in options.instance_ids
    note = None
    if not in_list and not options.orphans:
        note = "not in the job list: nothing deleted (--orphans prunes it)"
    elif options.fresh is not None and instance_id not in options.fresh:
        note = "no new AVAILABLE image in this run: nothing deleted (keep the last N good)"
    if note is not None:
        return InstancePlan(instance_id, tuple(ImageDecision(i, False, note) for i in ordered), note, in_list)
    decisions = []
    available = 0
    for image in ordered:
        decisions.append(_decide(image, available, options))
        if image.status == AVAILABLE and image.created is not None:
            available += 1
    return InstancePlan(instance_id, tuple(decisions), None, in_list)


def _decide(image: ImageRecord, newer_available: int, options: RetentionOptions) -> ImageDecision:
    """One image's fate, given how many AVAILABLE images of its instance are newer."""
    status = image.status
    if image.created is None:
        return ImageDecision(image, False, f"no readable {CREATED_KEY} tag: cannot be ordered, kept")
    if status in IN_PROGRESS_STATES:
        return ImageDecision(image, False, f"{status}: in progress, never deleted")
    if status in FAILED_STATES:
        if options.prune_failed:
            return ImageDecision(image, True, f"{status} (--prune-failed)")
        return ImageDecision(image, False, f"{status}: kept (--prune-failed deletes it)")
    if status != AVAILABLE:
        return ImageDecision(image, False, f"status {status or '(none)'}: kept")
    if newer_available == 0:
        return ImageDecision(image, False, "newest AVAILABLE: never deleted")
    if newer_available >= options.keep:
        return ImageDecision(image, True, f"beyond the newest {options.keep} AVAILABLE")
    if options.max_age is not None and image.created < options.now - options.max_age:
        return ImageDecision(image, True, f"older than {_age(options.max_age)}")
    return ImageDecision(image, False, f"among the newest {options.keep} AVAILABLE")


def _age(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"
