"""The fake cloud's state: instances, images, quota, time-driven status changes.

Time is the server's monotonic clock (injectable), and status changes happen lazily: every
action first calls :meth:`FakeCloud.advance`, which applies every change that is due.

Power (StopInstances / StartInstances): RUNNING -> STOPPING -> STOPPED after ``stop_seconds``
(``force_stop_seconds`` when forced); a graceful stop of a hanging instance stays STOPPING until
a forced stop arrives; STOPPED -> BOOTING -> RUNNING after ``boot_seconds``. CreateImage takes a
STOPPED instance to IMAGING until its image leaves CREATING, then back to STOPPED. Instances
that start in a transitional state (a fleet's ``fakeStatus``) stay in it: that is how a fleet
says "busy for good".
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .constants import MISSING_IMAGE_CODES
from .errors import (
    GpuNotSupported,
    ImageQuotaExceeded,
    InstanceInOperation,
    InstanceNotFound,
    InstanceStatusNotSupported,
    RecycledResource,
)
from .power import BATCH_ERROR_MODES, RECYCLED_STATES, PowerLedger, power_refusal

__all__ = ["FakeCloud", "FakeImage", "FakeInstance"]

#: Instance states in which another operation is under way.
BUSY_STATES = frozenset({"IMAGING", "STOPPING", "BOOTING", "REBUILDING", "RESIZING", "DEPLOYING"})


@dataclass(slots=True)
class FakeInstance:
    """One instance of the fake fleet."""

    instance_id: str
    status: str = "STOPPED"
    gpu: bool = False
    #: Until this server time the instance answers CreateImage with IN_OPERATION. Given to
    #: :class:`FakeCloud` as seconds after its creation; it holds the absolute time from then on.
    busy_until: float = 0.0
    zone_id: str = "SEL-A"
    #: its images end FAILED instead of AVAILABLE
    image_fails: bool = False
    #: its graceful stops hang in STOPPING until a forced stop arrives
    hangs: bool = False
    #: DescribeInstances' ``instanceName`` (default: the id)
    name: str = ""
    resource_group_id: str = "rg-default"
    tags: list[dict[str, str]] = field(default_factory=list)

    def to_api(self) -> dict[str, object]:
        """The instance as DescribeInstances shows it (the fields the fake knows)."""
        return {
            "instanceId": self.instance_id,
            "instanceName": self.name or self.instance_id,
            "zoneId": self.zone_id,
            "status": self.status,
            "resourceGroupId": self.resource_group_id,
            "resourceGroupName": "Default Resource Group",
            "tags": {"tags": list(self.tags)},
        }


@dataclass(slots=True)
class FakeImage:
    """One custom image."""

    image_id: str
    image_name: str
    instance_id: str
    status: str
    created_at: float
    resource_group_id: str
    tags: list[dict[str, str]] = field(default_factory=list)
    region_id: str = "SEL"

    def to_api(self) -> dict[str, object]:
        """The image as DescribeCustomImages shows it."""
        return {
            "imageId": self.image_id,
            "imageName": self.image_name,
            "imageType": "CUSTOM_IMAGE",
            "imageSource": "CUSTOM",
            "imageSize": "20",
            "minDiskSize": 20,
            "imageStatus": self.status,
            "category": "Ubuntu",
            "osType": "linux",
            "nicNetworkType": ["FailoverIP"],
            "regionIdList": [self.region_id],
            "resourceGroupId": self.resource_group_id,
            "resourceGroupName": "Default Resource Group",
            "tags": {"tags": self.tags},
        }


class FakeCloud:
    """Instances and images, and the rules CreateImage and friends follow.

    Args:
        instances: the fleet.
        image_ready_seconds: time an image spends CREATING (its instance IMAGING).
        failed_images: instance ids whose images end FAILED instead of AVAILABLE.
        transition_seconds: time an image spends DELETING, and the default of the three power
            times below (default 1 s; it was the one power time before they existed).
        stop_seconds: time a graceful stop spends STOPPING (default 1 s).
        force_stop_seconds: time a forced stop spends STOPPING (default 0.2 s).
        boot_seconds: time a start spends BOOTING (default 1 s).
        batch_errors: what a Start/Stop id that may not be started/stopped (unknown, recycled,
            wrong state) does to its call: ``listed`` lists it as failed and the other ids
            proceed, except in a call with that one id alone, which answers the id's documented
            error; ``whole`` fails the whole call with the first such id's error, changing
            nothing. The documentation does not say which the API does.
        image_quota: how many custom images the account may hold (``None``: no limit).
        list_lag_seconds: a new image shows in DescribeCustomImages only this long after it was
            created (eventual consistency, which the real API may have).
        missing_image_code: the error DeleteImages answers for an image that does not exist
            (see :mod:`.images`): ``OPERATION_FAILED_RESOURCE_NOT_FOUND`` (what Terraform takes
            for "already deleted") or ``INVALID_IMAGE_NOT_FOUND`` (the older API's).
        clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        instances: Iterable[FakeInstance] = (),
        *,
        image_ready_seconds: float = 2.0,
        failed_images: Iterable[str] = (),
        transition_seconds: float | None = None,
        stop_seconds: float | None = None,
        force_stop_seconds: float | None = None,
        boot_seconds: float | None = None,
        batch_errors: str = "listed",
        image_quota: int | None = None,
        list_lag_seconds: float = 0.0,
        missing_image_code: str = MISSING_IMAGE_CODES[0],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if missing_image_code not in MISSING_IMAGE_CODES:
            msg = f"missing_image_code must be one of {', '.join(MISSING_IMAGE_CODES)}, not {missing_image_code!r}"
            raise ValueError(msg)
        if batch_errors not in BATCH_ERROR_MODES:
            msg = f"batch_errors must be one of {', '.join(BATCH_ERROR_MODES)}, not {batch_errors!r}"
            raise ValueError(msg)
        self.list_lag_seconds = list_lag_seconds
        self.missing_image_code = missing_image_code
        #: per image id, the DeleteImages calls that named it (a client must never repeat one)
        self.delete_requests: Counter[str] = Counter()
        #: the most ids one DeleteImages call carried
        self.largest_delete_call = 0
        self.instances: dict[str, FakeInstance] = {i.instance_id: i for i in instances}
        start = clock()
        for inst in self.instances.values():
            if inst.busy_until:
                inst.busy_until += start
        self.images: dict[str, FakeImage] = {}
        self.image_ready_seconds = image_ready_seconds
        self.failed_images = set(failed_images)
        self.transition_seconds = 1.0 if transition_seconds is None else transition_seconds
        self.stop_seconds = _or(stop_seconds, _or(transition_seconds, 1.0))
        self.force_stop_seconds = _or(force_stop_seconds, _or(transition_seconds, 0.2))
        self.boot_seconds = _or(boot_seconds, _or(transition_seconds, 1.0))
        self.batch_errors = batch_errors
        self.image_quota = image_quota
        self.clock = clock
        #: every image ever created, per source instance (deleted ones included)
        self.created_per_instance: Counter[str] = Counter()
        self.power = PowerLedger.of((i.instance_id, i.status) for i in self.instances.values())
        self._due: list[tuple[float, int, str, str, int]] = []  # (when, seq, kind, id, epoch)
        self._seq = itertools.count()
        self._image_ids = itertools.count(1)
        # A power change is due only while its instance's epoch is unchanged: a forced stop
        # replaces a slower graceful one, and a stale event must not touch a later state.
        self._epochs: dict[str, int] = {}
        self._power_due: dict[str, float] = {}

    # ----- time ------------------------------------------------------------------------------

    def _schedule(self, delay: float, kind: str, ident: str, epoch: int = 0) -> None:
        heapq.heappush(self._due, (self.clock() + delay, next(self._seq), kind, ident, epoch))

    def _schedule_power(self, delay: float, instance_id: str, target: str) -> None:
        """Move the instance to ``target`` after ``delay``, replacing any power change pending."""
        epoch = self._epochs.get(instance_id, 0) + 1
        self._epochs[instance_id] = epoch
        self._power_due[instance_id] = self.clock() + delay
        self._schedule(delay, target, instance_id, epoch)

    def advance(self) -> None:
        """Apply every status change that is due by now."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, _, kind, ident, epoch = heapq.heappop(self._due)
            if kind == "image":
                self._finish_image(ident)
            elif kind == "delete":
                self.images.pop(ident, None)
            elif self._epochs.get(ident) == epoch:  # a power change: STOPPED or RUNNING
                del self._power_due[ident]
                inst = self.instances[ident]
                inst.status = kind
                if kind == "RUNNING":
                    self.power.running_again(ident)

    def _finish_image(self, image_id: str) -> None:
        image = self.images.get(image_id)
        if image is None or image.status != "CREATING":
            return
        image.status = "FAILED" if image.instance_id in self.failed_images else "AVAILABLE"
        inst = self.instances.get(image.instance_id)
        if inst is not None and inst.status == "IMAGING":
            inst.status = "STOPPED"

    # ----- actions ---------------------------------------------------------------------------

    def check_create_image(self, instance_id: str) -> FakeInstance:
        """Raise the error CreateImage would answer for this instance now, if any.

        A recycled instance answers OPERATION_FAILED_FOR_RECYCLE_RESOURCE (the documentation
        lists no CreateImage code for it; this common code says what happened, where
        INVALID_INSTANCE_NOT_FOUND would hide it).

        Args:
            instance_id: the instance.
        """
        inst = self.instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"instance {instance_id} does not exist")
        if inst.status in RECYCLED_STATES:
            raise RecycledResource(f"instance {instance_id} is in the recycle bin")
        if inst.gpu:
            raise GpuNotSupported(f"instance {instance_id} is a GPU instance; imaging is not supported")
        if inst.status in BUSY_STATES or inst.busy_until > self.clock():
            raise InstanceInOperation(f"instance {instance_id} is in another operation")
        if inst.status != "STOPPED":
            raise InstanceStatusNotSupported(f"instance {instance_id} is {inst.status}; it must be STOPPED")
        if self.image_quota is not None and len(self.images) >= self.image_quota:
            raise ImageQuotaExceeded(f"custom image quota of {self.image_quota} reached")
        return inst

    def create_image(
        self, instance_id: str, image_name: str, resource_group_id: str | None, tags: list[dict[str, str]]
    ) -> FakeImage:
        """Commit a new image (CREATING) and put its instance into IMAGING."""
        inst = self.check_create_image(instance_id)
        image = FakeImage(
            image_id=f"img-{next(self._image_ids):08d}",
            image_name=image_name,
            instance_id=instance_id,
            status="CREATING",
            created_at=self.clock(),
            resource_group_id=resource_group_id or "rg-default",
            tags=tags,
        )
        self.images[image.image_id] = image
        self.created_per_instance[instance_id] += 1
        inst.status = "IMAGING"
        self._schedule(self.image_ready_seconds, "image", image.image_id)
        return image

    def delete_images(self, image_ids: list[str]) -> list[str]:
        """Start deleting images; return the ids that could not be deleted."""
        failed = []
        for image_id in image_ids:
            image = self.images.get(image_id)
            if image is None or image.status in {"CREATING", "DELETING"}:
                failed.append(image_id)
                continue
            image.status = "DELETING"
            self._schedule(self.transition_seconds, "delete", image_id)
        return failed

    def stop_instances(
        self,
        instance_ids: list[str],
        *,
        force: bool | None,
        failing: frozenset[str] = frozenset(),
        hanging: frozenset[str] = frozenset(),
    ) -> list[str]:
        """StopInstances: stop what may be stopped; return the ids that failed.

        Args:
            instance_ids: the ids of the call, each once.
            force: ``forceShutdown`` as sent; ``None`` (omitted) forces, as the API documents.
            failing: ids a script lists as failed (nothing happens to them).
            hanging: ids whose graceful stop a script makes hang.

        Raises:
            FakeApiError: the call's error (see ``batch_errors``); then nothing changed.
        """
        forced = force is not False
        if force is None:
            self.power.stops_without_force_field += 1
        failed = self._refused(instance_ids, failing, start=False, forced=forced)
        for instance_id in instance_ids:
            if instance_id in failed:
                continue
            inst = self.instances[instance_id]
            self.power.stop_accepted(instance_id, forced=forced)
            if inst.status == "STOPPING":  # forced, ending a slower (or hanging) graceful stop
                pending = self._power_due.get(instance_id)
                if pending is None or pending > self.clock() + self.force_stop_seconds:
                    self._schedule_power(self.force_stop_seconds, instance_id, "STOPPED")
                continue
            inst.status = "STOPPING"
            if forced:
                self._schedule_power(self.force_stop_seconds, instance_id, "STOPPED")
            elif not (inst.hangs or instance_id in hanging):
                self._schedule_power(self.stop_seconds, instance_id, "STOPPED")
            # else a hanging graceful stop: nothing is due until a forced stop arrives
        return [i for i in instance_ids if i in failed]

    def start_instances(self, instance_ids: list[str], *, failing: frozenset[str] = frozenset()) -> list[str]:
        """StartInstances: start what may be started; return the ids that failed.

        Args:
            instance_ids: the ids of the call, each once.
            failing: ids a script lists as failed (nothing happens to them).

        Raises:
            FakeApiError: the call's error (see ``batch_errors``); then nothing changed.
        """
        failed = self._refused(instance_ids, failing, start=True, forced=False)
        for instance_id in instance_ids:
            if instance_id not in failed:
                self.instances[instance_id].status = "BOOTING"
                self.power.starts += 1
                self._schedule_power(self.boot_seconds, instance_id, "RUNNING")
        return [i for i in instance_ids if i in failed]

    def _refused(self, instance_ids: list[str], failing: frozenset[str], *, start: bool, forced: bool) -> set[str]:
        """The ids a Start/Stop call fails, or raise the call's error (before anything changes)."""
        failed = set(failing.intersection(instance_ids))
        for instance_id in instance_ids:
            if instance_id in failed:
                continue
            inst = self.instances.get(instance_id)
            error = power_refusal(instance_id, inst.status if inst else None, start=start, forced=forced)
            if error is None:
                continue
            if self.batch_errors == "whole" or len(instance_ids) == 1:
                raise error
            failed.add(instance_id)
        return failed

    def listed_images(self) -> list[FakeImage]:
        """The images DescribeCustomImages shows now (a new one only after the list lag)."""
        visible_before = self.clock() - self.list_lag_seconds
        return [i for i in self.images.values() if i.created_at <= visible_before]

    def images_per_instance(self) -> dict[str, int]:
        """Live (not deleted) images per source instance."""
        return dict(Counter(image.instance_id for image in self.images.values()))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
