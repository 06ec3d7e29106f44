"""``run --keep``: which older images each job deletes once its new image is AVAILABLE.

The run lists the policy's images once, at its start (DescribeCustomImages with the policy's tag,
1,000 a page), and groups them by instance. When a job's new image is AVAILABLE, the job's prune
step asks :meth:`KeepBook.deletions` which of that instance's images go: the retention rules of
:mod:`batch.retention` over the listed images plus the new one, with the instance as the only
one that got a new good image ("keep the last N good": a job whose image failed never gets here).

An image is handed out once per process; on a resume, images whose DeleteImages the journal says
was sent are handed out again only if the resume's listing still shows them (not DELETING, not
gone): the API never applied that call, so sending it again deletes nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ownership import INSTANCE_KEY, POLICY_KEY, policy_problem
from .retention import DELETING, ImageRecord, RetentionOptions, plan_retention

__all__ = ["KeepBook", "KeepChoice", "KeepRule", "new_image_record"]


@dataclass(frozen=True, slots=True)
class KeepChoice:
    """What one instance's prune does.

    Args:
        delete: the images to delete (each handed out once per process).
        kept: the images of the policy it keeps (the new one included), newest first.
    """

    delete: tuple[str, ...]
    kept: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeepRule:
    """The run's retention flags.

    Args:
        policy: ``--policy``: whose images are considered (and the tag every new image gets).
        keep: ``--keep``: AVAILABLE images kept per instance, the newest (at least 1).
        max_age_days: ``--max-age``: AVAILABLE images older than this go too (never the newest).
        prune_failed: ``--prune-failed``: FAILED and UNAVAILABLE images of the policy go too.
    """

    policy: str
    keep: int
    max_age_days: float | None = None
    prune_failed: bool = False

    def problem(self) -> str | None:
        """What is wrong with the flags, or ``None``."""
        if (policy := policy_problem(self.policy)) is not None:
            return policy
        if self.keep < 1:
            return "--keep must be at least 1: the newest AVAILABLE image is never deleted"
        if self.max_age_days is not None and not self.max_age_days > 0:
            return "--max-age must be a positive number of days"
        return None


class KeepBook:
    """The policy's images as listed at the run's start, and what each instance's prune deletes.

    Args:
        rule: the run's retention flags.
        images: the policy listing (images of other policies are ignored).
    """

    def __init__(self, rule: KeepRule, images: Iterable[ImageRecord]) -> None:
        self.rule = rule
        self._by_instance: dict[str, list[ImageRecord]] = {}
        self._by_id: dict[str, ImageRecord] = {}
        for image in images:
            if image.tag(POLICY_KEY) != rule.policy:
                continue
            self._by_id[image.image_id] = image
            instance = image.tag(INSTANCE_KEY)
            if instance:
                self._by_instance.setdefault(instance, []).append(image)
        #: ids handed out for deletion by this process
        self._taken: set[str] = set()

    @property
    def images(self) -> int:
        """Images of the policy the listing found."""
        return sum(len(v) for v in self._by_instance.values())

    def deletions(self, instance_id: str, new_image: ImageRecord, now: datetime) -> list[str]:
        """The images of ``instance_id`` to delete now that ``new_image`` is AVAILABLE.

        Args:
            instance_id: the job's instance.
            new_image: its new image (AVAILABLE, with its ownership tags).
            now: the time ``--max-age`` counts back from.
        """
        return list(self.choose(instance_id, new_image, now).delete)

    def choose(self, instance_id: str, new_image: ImageRecord, now: datetime) -> KeepChoice:
        """What the prune of ``instance_id`` deletes and keeps now that ``new_image`` is AVAILABLE.

        Args:
            instance_id: the job's instance.
            new_image: its new image (AVAILABLE, with its ownership tags).
            now: the time ``--max-age`` counts back from.
        """
        listed = [i for i in self._by_instance.get(instance_id, []) if i.image_id != new_image.image_id]
        only = frozenset({instance_id})
        age = None if self.rule.max_age_days is None else timedelta(days=self.rule.max_age_days)
        options = RetentionOptions(
            policy=self.rule.policy,
            keep=self.rule.keep,
            now=now,
            max_age=age,
            prune_failed=self.rule.prune_failed,
            instance_ids=only,
            fresh=only,
        )
        plan = plan_retention([*listed, new_image], options)
        chosen = tuple(image_id for image_id, _ in plan.deletions() if image_id not in self._taken)
        self._taken.update(chosen)
        kept = tuple(d.image.image_id for p in plan.instances for d in p.kept)
        return KeepChoice(chosen, kept)

    def listed(self, image_id: str) -> ImageRecord | None:
        """The listing's record of an image of the policy, or ``None`` (not listed).

        Args:
            image_id: the image.
        """
        return self._by_id.get(image_id)

    def gone_since(self, instance_id: str, journaled: Mapping[str, str]) -> list[str]:
        """Images of ``instance_id`` an earlier process of the run sent DeleteImages for that the
        listing no longer shows, or shows DELETING: that process deleted them.

        (Those it still shows otherwise were never deleted: the rules hand them out again.)

        Args:
            instance_id: the job's instance.
            journaled: the journal's ``delete`` records (image id: instance id).
        """
        gone = []
        for image_id, owner in journaled.items():
            if owner != instance_id:
                continue
            image = self._by_id.get(image_id)
            if image is None or image.status == DELETING:
                gone.append(image_id)
        return sorted(gone)

    def kept(self, instance_id: str, deleted: Iterable[str]) -> int:
        """Images of the policy the instance keeps after ``deleted`` (the new one included)."""
        gone = set(deleted)
        return 1 + sum(1 for i in self._by_instance.get(instance_id, []) if i.image_id not in gone)


def new_image_record(image_id: str, name: str, tags: Iterable[tuple[str, str]]) -> ImageRecord:
    """The record of a job's new image, AVAILABLE, as the listing would show it."""
    return ImageRecord(image_id, name, "AVAILABLE", tuple(tags))
