"""The fake's custom-image actions: the listing with its filters, deletion, and a view for tests.

Written from the API fact sheet (§6.2, §6.5, §7):

* DescribeCustomImages filters by ``imageIds``, ``imageName`` (fuzzy), ``imageStatus``,
  ``resourceGroupId``, ``regionId``, ``tags`` (a plain array of ``{key, value}``, not the
  ``{"tags": [...]}`` wrapper CreateImage takes) and ``tagKeys``; 20 items at most in each of
  the last two, and every filter must hold;
* DeleteImages answers, in ``imageIds``, the ids that failed; an image it accepts is DELETING,
  then gone after the cloud's ``transition_seconds``, and counts against the quota until gone;
  a CREATING or DELETING image fails. An id that does not exist is listed as failed among
  others, and alone in its call answers 404 with the cloud's ``missing_image_code``
  (``batch_errors="whole"``: any such id fails the whole call, deleting nothing), the same
  convention the fake's StopInstances follows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .constants import MISSING_IMAGE_CODES
from .errors import FakeApiError
from .params import id_list, optional_str, page, tag_filters, tags_match
from .scripts import NO_FAULT, Taken
from .state import FakeCloud, FakeImage

__all__ = ["MISSING_IMAGE_CODES", "delete_images", "describe_custom_images", "images_view", "seed_image"]


def describe_custom_images(cloud: FakeCloud, params: dict[str, Any], _taken: Taken = NO_FAULT) -> dict[str, Any]:
    """DescribeCustomImages: one page of the images that pass every filter, in id order.

    Args:
        cloud: the state.
        params: the request's JSON object.
        _taken: scripts (none apply to a listing's items).
    """
    num, size = page(params)
    ids = id_list(params, "imageIds", required=False, limit=None)
    name = optional_str(params, "imageName")
    status = optional_str(params, "imageStatus")
    group = optional_str(params, "resourceGroupId")
    region = optional_str(params, "regionId")
    tags, keys = tag_filters(params)
    wanted = set(ids) if ids is not None else None
    images = [
        i
        for i in sorted(cloud.listed_images(), key=lambda i: i.image_id)
        if (wanted is None or i.image_id in wanted)
        and (name is None or name in i.image_name)  # fuzzy, like the API
        and (status is None or i.status == status)
        and (group is None or i.resource_group_id == group)
        and (region is None or i.region_id == region)
        and tags_match(i.tags, tags, keys)
    ]
    shown = images[(num - 1) * size : num * size]
    return {"totalCount": len(images), "dataSet": [i.to_api() for i in shown]}


def delete_images(cloud: FakeCloud, params: dict[str, Any], taken: Taken = NO_FAULT) -> dict[str, Any]:
    """DeleteImages: start deleting; answer the ids that failed.

    Args:
        cloud: the state.
        params: the request's JSON object.
        taken: scripts: ids a script lists as failed (nothing happens to them).

    Raises:
        FakeApiError: 404 ``missing_image_code`` for an unknown id alone in its call (or any
            unknown id, with ``batch_errors="whole"``); nothing is deleted then.
    """
    # The documentation gives DeleteImages no id limit; the client batches 100 a call, and
    # tests read the largest call from the view.
    ids = id_list(params, "imageIds", required=True, limit=None) or []
    cloud.delete_requests.update(ids)
    cloud.largest_delete_call = max(cloud.largest_delete_call, len(ids))
    missing = [i for i in ids if i not in cloud.images]
    if missing and (cloud.batch_errors == "whole" or len(ids) == 1):
        raise FakeApiError(f"image {missing[0]} does not exist", code=cloud.missing_image_code, status=404)
    failing = taken.failing_of(ids)
    failed = set(cloud.delete_images([i for i in ids if i not in failing]))
    return {"imageIds": [i for i in ids if i in failing or i in failed]}


def seed_image(
    cloud: FakeCloud,
    instance_id: str,
    image_name: str,
    *,
    status: str = "AVAILABLE",
    tags: Iterable[tuple[str, str]] = (),
) -> FakeImage:
    """Put an image into the cloud as if made earlier (any status, listed at once).

    For tests: a person's image, another policy's, one stuck in PROCESSING. CreateImage's rules
    (a STOPPED instance, the quota) do not apply to it.

    Args:
        cloud: the state.
        instance_id: its source instance (need not exist).
        image_name: its name.
        status: its ``imageStatus``; it stays so.
        tags: its ``(key, value)`` tags.
    """
    image = FakeImage(
        image_id=f"img-{next(cloud._image_ids):08d}",
        image_name=image_name,
        instance_id=instance_id,
        status=status,
        # Older than the list lag: an image made earlier is listed at once.
        created_at=cloud.clock() - cloud.list_lag_seconds,
        resource_group_id="rg-default",
        tags=[{"key": k, "value": v} for k, v in tags],
    )
    cloud.images[image.image_id] = image
    return image


def images_view(cloud: FakeCloud) -> dict[str, Any]:
    """What ``GET /_fake/images`` shows: every image (DELETING ones too) with its tags.

    Also ``deleteRequests`` (per image id, the DeleteImages calls that named it) and
    ``largestDeleteCall`` (the most ids one call carried).

    Args:
        cloud: the state.
    """
    cloud.advance()
    return {
        "images": [
            {
                "imageId": i.image_id,
                "imageName": i.image_name,
                "instanceId": i.instance_id,
                "imageStatus": i.status,
                "tags": {t["key"]: t["value"] for t in i.tags},
            }
            for i in sorted(cloud.images.values(), key=lambda i: i.image_id)
        ],
        "deleteRequests": dict(cloud.delete_requests),
        "largestDeleteCall": cloud.largest_delete_call,
    }
