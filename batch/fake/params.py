"""Parameter checks shared by the fake's handlers: each raises the error the API would answer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import InvalidParameter, MissingParameter

__all__ = ["id_list", "optional_str", "page", "required_str", "tag_filters", "tags_match"]

#: Most items in a Describe call's ``tags`` or ``tagKeys`` filter.
MAX_TAG_FILTERS = 20


def required_str(params: dict[str, Any], name: str) -> str:
    """A required string parameter.

    Args:
        params: the request's JSON object.
        name: the parameter.
    """
    if name not in params or params[name] in (None, ""):
        raise MissingParameter(f"{name} is required")
    value = params[name]
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string", code="INVALID_PARAMETER_TYPE")
    return value


def id_list(params: dict[str, Any], name: str, *, required: bool, limit: int | None = 100) -> list[str] | None:
    """An array-of-strings parameter (``None`` when absent and optional).

    Args:
        params: the request's JSON object.
        name: the parameter.
        required: whether it must be present and not empty.
        limit: most items (``None``: no limit).
    """
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


def optional_str(params: dict[str, Any], name: str) -> str | None:
    """An optional string parameter (``None`` when absent or empty).

    Args:
        params: the request's JSON object.
        name: the parameter.
    """
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string", code="INVALID_PARAMETER_TYPE")
    return value


def page(params: dict[str, Any]) -> tuple[int, int]:
    """``pageNum`` (default 1) and ``pageSize`` (default 20, at most 1000).

    Args:
        params: the request's JSON object.
    """
    num, size = params.get("pageNum", 1), params.get("pageSize", 20)
    if not isinstance(num, int) or not isinstance(size, int):
        raise InvalidParameter("pageNum and pageSize must be integers", code="INVALID_PARAMETER_TYPE")
    if num < 1 or size < 1:
        raise InvalidParameter("pageNum and pageSize must be at least 1", code="INVALID_PARAMETER_LESS_MINIMUM")
    if size > 1000:
        raise InvalidParameter("pageSize is at most 1000", code="INVALID_PARAMETER_EXCEED_MAXIMUM")
    return num, size


def tag_filters(params: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``tags`` (a plain array of Tag, not wrapped) and ``tagKeys`` filters of a Describe call.

    Args:
        params: the request's JSON object.
    """
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
    if len(tags) > MAX_TAG_FILTERS or len(keys) > MAX_TAG_FILTERS:
        raise InvalidParameter(
            f"tags and tagKeys take at most {MAX_TAG_FILTERS} items each", code="INVALID_PARAMETER_EXCEED_LENGTH"
        )
    return [(t["key"], t["value"]) for t in tags], keys


def tags_match(held: Iterable[dict[str, str]], tags: list[tuple[str, str]], keys: list[str]) -> bool:
    """Whether a resource's tags pass the ``tags`` and ``tagKeys`` filters.

    Every filter must hold (AND): the documentation does not say, and AND is the narrower
    reading, so a client that relies on OR is caught.

    Args:
        held: the resource's tags, ``{"key", "value"}`` objects.
        tags: pairs that must all be present.
        keys: keys that must all be present, with any value.
    """
    pairs = {(t["key"], t["value"]) for t in held}
    held_keys = {key for key, _ in pairs}
    return all(t in pairs for t in tags) and all(k in held_keys for k in keys)
