"""The fake cloud's state: instances, images, quota, time-driven status changes.

Time is the server's monotonic clock (injectable), and status changes happen lazily: every
action first calls :meth:`FakeCloud.advance`, which applies every change that is due.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import (
    FakeApiError,
    GpuNotSupported,
    ImageQuotaExceeded,
    InstanceInOperation,
    InstanceNotFound,
    InstanceStatusNotSupported,
)

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
        transition_seconds: time spent STOPPING or BOOTING.
        image_quota: how many custom images the account may hold (``None``: no limit).
        list_lag_seconds: a new image shows in DescribeCustomImages only this long after it was
            created (eventual consistency, which the real API may have).
        clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        instances: Iterable[FakeInstance] = (),
        *,
        image_ready_seconds: float = 2.0,
        failed_images: Iterable[str] = (),
        transition_seconds: float = 1.0,
        image_quota: int | None = None,
        list_lag_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.list_lag_seconds = list_lag_seconds
        self.instances: dict[str, FakeInstance] = {i.instance_id: i for i in instances}
        start = clock()
        for inst in self.instances.values():
            if inst.busy_until:
                inst.busy_until += start
        self.images: dict[str, FakeImage] = {}
        self.image_ready_seconds = image_ready_seconds
        self.failed_images = set(failed_images)
        self.transition_seconds = transition_seconds
        self.image_quota = image_quota
        self.clock = clock
        #: every image ever created, per source instance (deleted ones included)
        self.created_per_instance: Counter[str] = Counter()
        self._due: list[tuple[float, int, str, str]] = []  # (when, seq, kind, id)
        self._seq = itertools.count()
        self._image_ids = itertools.count(1)

    # ----- time ------------------------------------------------------------------------------

    def _schedule(self, delay: float, kind: str, ident: str) -> None:
        heapq.heappush(self._due, (self.clock() + delay, next(self._seq), kind, ident))

    def advance(self) -> None:
        """Apply every status change that is due by now."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, _, kind, ident = heapq.heappop(self._due)
            if kind == "image":
                self._finish_image(ident)
            elif kind == "delete":
                self.images.pop(ident, None)
            elif kind == "status":
                inst = self.instances.get(ident)
                if inst is not None:
                    inst.status = {"STOPPING": "STOPPED", "BOOTING": "RUNNING"}.get(inst.status, inst.status)

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
        """Raise the error CreateImage would answer for this instance now, if any."""
        inst = self.instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"instance {instance_id} does not exist")
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

    def set_power(self, instance_ids: list[str], *, on: bool) -> list[str]:
        """Start or stop instances; return the ids that failed."""
        failed = []
        want, via = ("STOPPED", "BOOTING") if on else ("RUNNING", "STOPPING")
        for instance_id in instance_ids:
            inst = self.instances.get(instance_id)
            if inst is None or inst.status != want:
                failed.append(instance_id)
                continue
            inst.status = via
            self._schedule(self.transition_seconds, "status", instance_id)
        return failed

    def power_error(self, instance_ids: list[str], *, on: bool) -> FakeApiError | None:
        """The error a single-instance Start/Stop call answers with (as the docs list)."""
        if len(instance_ids) != 1:
            return None
        inst = self.instances.get(instance_ids[0])
        if inst is None:
            return InstanceNotFound(f"instance {instance_ids[0]} does not exist")
        if on and inst.status != "STOPPED":
            return FakeApiError("instance is not stopped", code="OPERATION_DENIED_INSTANCE_NOT_STOPPED", status=403)
        if not on and inst.status != "RUNNING":
            return FakeApiError("instance is not running", code="OPERATION_DENIED_INSTANCE_NOT_RUNNING", status=403)
        return None

    def listed_images(self) -> list[FakeImage]:
        """The images DescribeCustomImages shows now (a new one only after the list lag)."""
        visible_before = self.clock() - self.list_lag_seconds
        return [i for i in self.images.values() if i.created_at <= visible_before]

    def images_per_instance(self) -> dict[str, int]:
        """Live (not deleted) images per source instance."""
        return dict(Counter(image.instance_id for image in self.images.values()))
