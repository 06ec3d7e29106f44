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
from .errors import InvalidParameter, MissingParameter
from .scripts import NO_FAULT, Taken
from .state import FakeCloud, FakeInstance

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


def _required_str(params: dict[str, Any], name: str) -> str:
    if name not in params or params[name] in (None, ""):
        raise MissingParameter(f"{name} is required")
    value = params[name]
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string", code="INVALID_PARAMETER_TYPE")
    return value


def _id_list(params: dict[str, Any], name: str, *, required: bool, limit: int | None = 100) -> list[str] | None:
    if name not in params or params[name] is None:
        if required:
            raise MissingParameter(f"{name} is required")
        return None
    value = params[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{name} must be an array of strings", code="INVALID_PARAMETER_TYPE")
    if limit is not None and len(value) > limit:
        raise InvalidParameter(f"{name} takes at most {limit} ids", code="INVALID_PARAMETER_EXCEED_LENGTH")
    if required and not value:
        raise InvalidParameter(f"{name} must not be empty", code="INVALID_PARAMETER_LESS_LENGTH")
    return value


def _distinct(ids: list[str], name: str) -> list[str]:
    # Undocumented; refusing a repeated id keeps a client bug from hiding behind a lenient fake.
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidParameter(f"{name} repeats {', '.join(repeated)}")
    return ids


def _optional_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string", code="INVALID_PARAMETER_TYPE")
    return value


def _page(params: dict[str, Any]) -> tuple[int, int]:
    num, size = params.get("pageNum", 1), params.get("pageSize", 20)
    if not isinstance(num, int) or not isinstance(size, int):
        raise InvalidParameter("pageNum and pageSize must be integers", code="INVALID_PARAMETER_TYPE")
    if num < 1 or size < 1:
        raise InvalidParameter("pageNum and pageSize must be at least 1", code="INVALID_PARAMETER_LESS_MINIMUM")
    if size > 1000:
        raise InvalidParameter("pageSize is at most 1000", code="INVALID_PARAMETER_EXCEED_MAXIMUM")
    return num, size


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


def describe_custom_images(cloud: FakeCloud, params: dict[str, Any], _taken: Taken = NO_FAULT) -> dict[str, Any]:
    num, size = _page(params)
    ids = _id_list(params, "imageIds", required=False, limit=None)
    name = params.get("imageName")
    status = params.get("imageStatus")
    images = sorted(cloud.listed_images(), key=lambda i: i.image_id)
    if ids is not None:
        wanted = set(ids)
        images = [i for i in images if i.image_id in wanted]
    if isinstance(name, str) and name:
        images = [i for i in images if name in i.image_name]  # fuzzy, like the API
    if isinstance(status, str) and status:
        images = [i for i in images if i.status == status]
    page = images[(num - 1) * size : num * size]
    return {"totalCount": len(images), "dataSet": [i.to_api() for i in page]}


def delete_images(cloud: FakeCloud, params: dict[str, Any], taken: Taken = NO_FAULT) -> dict[str, Any]:
    ids = _id_list(params, "imageIds", required=True, limit=None) or []
    failing = taken.failing_of(ids)
    failed = cloud.delete_images([i for i in ids if i not in failing])
    return {"imageIds": [i for i in ids if i in failing or i in failed]}


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


def _tag_filters(params: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``tags`` (a plain array of Tag) and ``tagKeys`` filters of a Describe call."""
    tags, keys = params.get("tags"), params.get("tagKeys")
    if tags is None:
        tags = []
    if keys is None:
        keys = []
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value"), str) for t in tags
    ):
        raise InvalidParameter('tags must be an array of {"key": ..., "value": ...}', code="INVALID_PARAMETER_TYPE")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InvalidParameter("tagKeys must be an array of strings", code="INVALID_PARAMETER_TYPE")
    if len(tags) > 20 or len(keys) > 20:
        raise InvalidParameter("tags and tagKeys take at most 20 items each", code="INVALID_PARAMETER_EXCEED_LENGTH")
    return [(t["key"], t["value"]) for t in tags], keys


def _matches(inst: FakeInstance, tags: list[tuple[str, str]], keys: list[str]) -> bool:
    # Every filter must hold (AND); the documentation does not say, and AND is the narrower reading.
    held = {(t["key"], t["value"]) for t in inst.tags}
    held_keys = {t["key"] for t in inst.tags}
    return all(t in held for t in tags) and all(k in held_keys for k in keys)


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
        and ((not tags and not keys) or _matches(i, tags, keys))
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
