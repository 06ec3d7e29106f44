"""The fake's action handlers: parameter checks, then the cloud's rules.

Each handler takes the cloud, the request's JSON object and what the scripts say about the call
(:class:`~.scripts.Taken`: ids to list as failed, stops that hang), and returns the ``response``
object.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from .constants import IMAGE_NAME_MAX, IMAGE_NAME_MIN
from .errors import InvalidParameter
from .images import delete_images, describe_custom_images
from .params import id_list as _id_list
from .params import optional_str as _optional_str
from .params import page as _page
from .params import required_str as _required_str
from .params import tag_filters as _tag_filters
from .params import tags_match
from .scripts import NO_FAULT, Taken
from .state import FakeCloud

__all__ = ["HANDLERS", "image_name_error"]

Handler = Callable[[FakeCloud, dict[str, Any], Taken], dict[str, Any]]

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_ALNUM = frozenset(string.ascii_letters + string.digits)


def image_name_error(name: str) -> InvalidParameter | None:
    """The error CreateImage answers for this imageName, or ``None`` when the API accepts it.

    The rule, from the API's documentation: 2-63 characters of ASCII letters, digits, ``-``,
    ``_`` and ``.``, starting and ending with a letter or digit.

    Args:
        name: the requested image name.
    """
    if len(name) < IMAGE_NAME_MIN:
        return InvalidParameter(
            f"imageName must be at least {IMAGE_NAME_MIN} characters", code="INVALID_PARAMETER_LESS_LENGTH"
        )
    if len(name) > IMAGE_NAME_MAX:
        return InvalidParameter(
            f"imageName must be at most {IMAGE_NAME_MAX} characters", code="INVALID_PARAMETER_EXCEED_LENGTH"
        )
    if not _NAME_CHARS.fullmatch(name):
        return InvalidParameter(
            "imageName may hold only letters, digits, '-', '_' and '.'", code="INVALID_PARAMETER_PATTERN_ERROR"
        )
    if name[0] not in _ALNUM or name[-1] not in _ALNUM:
        return InvalidParameter(
            "imageName must start and end with a letter or digit", code="INVALID_PARAMETER_PATTERN_ERROR"
        )
    return None


def _distinct(ids: list[str], name: str) -> list[str]:
    # Undocumented; refusing a repeated id keeps a client bug from hiding behind a lenient fake.
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidParameter(f"{name} repeats {', '.join(repeated)}")
    return ids


def _tags(params: dict[str, Any]) -> list[dict[str, str]]:
    raw = params.get("tags")
    if raw is None:
        return []
    if not isinstance(raw, dict) or not isinstance(raw.get("tags"), list):
        raise InvalidParameter('tags must be {"tags": [{"key": ..., "value": ...}]}', code="INVALID_PARAMETER_TYPE")
    tags, keys = [], set()
    for tag in raw["tags"]:
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str) or not isinstance(tag.get("value"), str):
            raise InvalidParameter("each tag needs a string key and value", code="INVALID_PARAMETER_TYPE")
        if not (1 <= len(tag["key"]) <= 64 and 1 <= len(tag["value"]) <= 64):
            raise InvalidParameter("tag keys and values are 1-64 characters", code="INVALID_PARAMETER_EXCEED_LENGTH")
        if tag["key"] in keys:
            raise InvalidParameter(f"tag key {tag['key']!r} is repeated")
        keys.add(tag["key"])
        tags.append({"key": tag["key"], "value": tag["value"]})
    return tags


def create_image(cloud: FakeCloud, params: dict[str, Any], _taken: Taken = NO_FAULT) -> dict[str, Any]:
    instance_id = _required_str(params, "instanceId")
    name = _required_str(params, "imageName")
    problem = image_name_error(name)
    if problem is not None:
        raise problem
    group = _optional_str(params, "resourceGroupId")
    image = cloud.create_image(instance_id, name, group, _tags(params))
    return {"imageId": image.image_id, "imageName": image.image_name}


def describe_instances_status(cloud: FakeCloud, params: dict[str, Any], _taken: Taken = NO_FAULT) -> dict[str, Any]:
    num, size = _page(params)
    ids = _id_list(params, "instanceIds", required=False)
    group = _optional_str(params, "resourceGroupId")
    if ids:
        found = [cloud.instances[i] for i in ids if i in cloud.instances]
    else:
        found = sorted(cloud.instances.values(), key=lambda i: i.instance_id)
    if group is not None:
        found = [i for i in found if i.resource_group_id == group]
    page = found[(num - 1) * size : num * size]
    return {
        "totalCount": len(found),
        "dataSet": [{"instanceId": i.instance_id, "instanceStatus": i.status} for i in page],
    }


def describe_instances(cloud: FakeCloud, params: dict[str, Any], _taken: Taken = NO_FAULT) -> dict[str, Any]:
    num, size = _page(params)
    ids = _id_list(params, "instanceIds", required=False)
    zone, status = _optional_str(params, "zoneId"), _optional_str(params, "status")
    group, name = _optional_str(params, "resourceGroupId"), _optional_str(params, "name")
    tags, keys = _tag_filters(params)
    if ids:
        found = [cloud.instances[i] for i in dict.fromkeys(ids) if i in cloud.instances]
    else:
        found = sorted(cloud.instances.values(), key=lambda i: i.instance_id)
    found = [
        i
        for i in found
        if (zone is None or i.zone_id == zone)
        and (status is None or i.status == status)
        and (group is None or i.resource_group_id == group)
        and (name is None or name in (i.name or i.instance_id))  # fuzzy, like the API
        and tags_match(i.tags, tags, keys)
    ]
    page = found[(num - 1) * size : num * size]
    return {"totalCount": len(found), "dataSet": [i.to_api() for i in page]}


def _power_ids(params: dict[str, Any]) -> list[str]:
    return _distinct(_id_list(params, "instanceIds", required=True) or [], "instanceIds")


def start_instances(cloud: FakeCloud, params: dict[str, Any], taken: Taken = NO_FAULT) -> dict[str, Any]:
    ids = _power_ids(params)
    return {"instanceIds": cloud.start_instances(ids, failing=taken.failing_of(ids))}


def stop_instances(cloud: FakeCloud, params: dict[str, Any], taken: Taken = NO_FAULT) -> dict[str, Any]:
    ids = _power_ids(params)
    force = params.get("forceShutdown")
    if force is not None and not isinstance(force, bool):
        raise InvalidParameter("forceShutdown must be true or false", code="INVALID_PARAMETER_TYPE")
    failed = cloud.stop_instances(ids, force=force, failing=taken.failing_of(ids), hanging=taken.hanging_of(ids))
    return {"instanceIds": failed}


HANDLERS: dict[str, Handler] = {
    "CreateImage": create_image,
    "DescribeCustomImages": describe_custom_images,
    "DeleteImages": delete_images,
    "DescribeInstances": describe_instances,
    "DescribeInstancesStatus": describe_instances_status,
    "StartInstances": start_instances,
    "StopInstances": stop_instances,
}
