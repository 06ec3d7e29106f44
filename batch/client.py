"""Async client for the Zenlayer Cloud API v2 ``zec`` service (version 2025-09-01).

One ``aiohttp.ClientSession`` per client, its pool sized to the run's concurrency. aiohttp's
errors are mapped to ours (:mod:`batch.errors`) here, at the edge, and nowhere else.

Scheduling is not this module's business, but every HTTP request passes through an optional
``gate`` (awaited before sending: the rate limiter) and ``observer`` (told about each request
after it ends), so a paginated listing is limited and counted like any other call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import yarl

from ._jsonenc import compact_json as _compact_json
from ._version import __version__
from .answers import Answer, ApiResponse, Peer, malformed, network_error, parse_answer, parse_retry_after
from .credentials import Credentials, parse_endpoint
from .errors import AmbiguousError, ApiError
from .signing import ALGORITHM, sign

__all__ = ["API_VERSION", "LAST_REQUEST_ID", "ApiResponse", "CreatedImage", "RequestRecord", "ZecClient"]

API_VERSION = "2025-09-01"
SERVICE = "zec"
CONTENT_TYPE = "application/json"
MAX_IDS_PER_CALL = 100
MAX_PAGE_SIZE = 1000

#: The ``requestId`` of the last request the current task sent (``None``: its answer had none).
#: Each task sees its own value, so a batched call (``stop_instances`` of up to 100 ids) can tell
#: its request id to every id it carried without the methods returning it.
LAST_REQUEST_ID: ContextVar[str | None] = ContextVar("imagebatch_last_request_id", default=None)


@dataclass(frozen=True, slots=True)
class CreatedImage:
    """What CreateImage returned."""

    image_id: str
    image_name: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request as the observer sees it (no credential, no body)."""

    action: str
    status: int | None
    code: str | None
    request_id: str | None
    elapsed: float


Gate = Callable[[str], Awaitable[None]]
Observer = Callable[[RequestRecord], None]


def _chunks(ids: Sequence[str], size: int = MAX_IDS_PER_CALL) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


class ZecClient:
    """Client for the ``zec`` actions imagebatch uses.

    Args:
        endpoint: base URL, e.g. ``https://console.zenlayer.com`` (http only on loopback).
        credentials: access key pair or bearer token.
        pool_size: connections kept alive; size it to the run's concurrency.
        connect_timeout: seconds to open a connection.
        total_timeout: seconds for a whole request, answer included.
        gate: awaited with the action name before each HTTP request (rate limiting).
        observer: called after each HTTP request with a :class:`RequestRecord`.
        clock: wall clock for ``X-ZC-Timestamp`` (tests set it to test clock skew).
    """

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials,
        *,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        total_timeout: float = 60.0,
        gate: Gate | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = parse_endpoint(endpoint)
        self._url = base.with_path(f"/api/v2/{SERVICE}")
        self._host = base.host_port_subcomponent or ""
        self._credentials = credentials
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._peer = Peer(base.host or "", base.port or 443, connect_timeout, total_timeout)
        self._gate = gate
        self._observer = observer
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ZecClient({self._url}, {self._credentials.source_label})"

    @property
    def url(self) -> yarl.URL:
        """The URL every action is posted to."""
        return self._url

    async def __aenter__(self) -> Self:
        # TLS verification stays on: the connector's default ssl context verifies.
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._pool_size, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, raise_for_status=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, action: str, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-ZC-Action": action,
            "X-ZC-Version": API_VERSION,
            "X-ZC-Service": SERVICE,
            "X-ZC-Request-Client": f"imagebatch/{__version__}",
        }
        creds = self._credentials
        if creds.bearer:
            headers["Authorization"] = f"Bearer {creds.secret}"
            return headers
        timestamp = int(self._clock())
        signature = sign(
            access_key_id=creds.access_key_id or "",
            secret=creds.secret,
            method="POST",
            content_type=CONTENT_TYPE,
            host=self._host,
            timestamp=timestamp,
            body=body,
        )
        headers["X-ZC-Timestamp"] = str(timestamp)
        headers["X-ZC-Signature-Method"] = ALGORITHM
        headers["Authorization"] = signature.authorization
        return headers

    async def call(self, action: str, params: dict[str, Any], *, request_timeout: float | None = None) -> ApiResponse:
        """Send one action and return its ``response`` object.

        Args:
            action: e.g. ``CreateImage``.
            params: the action's parameters (camelCase keys).
            request_timeout: seconds for this request instead of the client's ``total_timeout``.

        Raises:
            ApiError: one of its subclasses, chosen by what happened.
        """
        if self._session is None:
            msg = "ZecClient is not open; use 'async with ZecClient(...)'"
            raise RuntimeError(msg)
        if self._gate is not None:
            await self._gate(action)
        body = _compact_json(params).encode()
        headers = self._headers(action, body)
        started = time.monotonic()
        status: int | None = None
        try:
            try:
                limit = (
                    self._timeout
                    if request_timeout is None
                    else aiohttp.ClientTimeout(request_timeout, self._timeout.connect)
                )
                # The API never redirects; following one would re-send the signed body (or the
                # bearer token) to wherever the Location points, so a 3xx is an answer to report.
                async with self._session.post(
                    self._url, data=body, headers=headers, timeout=limit, allow_redirects=False
                ) as resp:
                    status = resp.status
                    answer = Answer(
                        action,
                        status,
                        await resp.read(),
                        location=resp.headers.get("Location"),
                        mitigated=resp.headers.get("cf-mitigated", ""),
                        retry_after=parse_retry_after(resp.headers.get("Retry-After"), self._clock()),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                peer = self._peer
                if request_timeout is not None:  # a look-up's own, longer, timeout
                    peer = dataclasses.replace(peer, total_timeout=request_timeout)
                raise network_error(exc, action, peer, status=status) from exc
            result = parse_answer(answer)
        except ApiError as err:
            self._observe(action, err.status, err.code, err.request_id, started)
            raise
        self._observe(action, status, None, result.request_id, started)
        return result

    def _observe(
        self, action: str, status: int | None, code: str | None, request_id: str | None, started: float
    ) -> None:
        LAST_REQUEST_ID.set(request_id)
        if self._observer is not None:
            self._observer(RequestRecord(action, status, code, request_id, time.monotonic() - started))

    # ----- actions -----------------------------------------------------------------------

    async def create_image(
        self,
        instance_id: str,
        image_name: str,
        *,
        resource_group_id: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
    ) -> CreatedImage:
        """Start imaging one instance (asynchronous on the server: the image starts CREATING).

        Args:
            instance_id: the source instance; it must be STOPPED.
            image_name: 2-63 characters of letters, digits, ``-``, ``_``, ``.``.
            resource_group_id: resource group for the image; the default group when omitted.
            tags: ``(key, value)`` pairs.
        """
        params: dict[str, Any] = {"instanceId": instance_id, "imageName": image_name}
        if resource_group_id:
            params["resourceGroupId"] = resource_group_id
        if tags:
            params["tags"] = {"tags": [{"key": k, "value": v} for k, v in tags]}
        answer = await self.call("CreateImage", params)
        image_id = answer.data.get("imageId")
        if not isinstance(image_id, str) or not image_id:
            raise AmbiguousError(
                "MALFORMED_RESPONSE",
                "CreateImage answered 200 without an imageId",
                status=answer.status,
                request_id=answer.request_id,
                action="CreateImage",
            )
        name = answer.data.get("imageName")
        return CreatedImage(image_id, name if isinstance(name, str) else image_name, answer.request_id)

    async def describe_custom_images(
        self,
        *,
        image_name: str | None = None,
        image_ids: Sequence[str] | None = None,
        page_size: int = MAX_PAGE_SIZE,
        request_timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every custom image matching the filters, page by page.

        Args:
            image_name: the API matches it fuzzily; compare names yourself for an exact match.
            image_ids: only these images.
            page_size: 1 to 1000 images a page.
            request_timeout: seconds for each page's request instead of the client's ``total_timeout``.
        """
        page = 1
        seen = 0
        while True:
            params: dict[str, Any] = {"pageNum": page, "pageSize": page_size}
            if image_name is not None:
                params["imageName"] = image_name
            if image_ids is not None:
                params["imageIds"] = list(image_ids)
            answer = await self.call("DescribeCustomImages", params, request_timeout=request_timeout)
            data_set, total = _listing(answer, "DescribeCustomImages")
            for item in data_set:
                yield item
            seen += len(data_set)
            if not data_set or seen >= total:
                return
            page += 1

    async def delete_images(self, image_ids: Sequence[str]) -> list[str]:
        """Delete images; returns the ids that failed to delete (empty: all deleted).

        Args:
            image_ids: the images to delete.
        """
        answer = await self.call("DeleteImages", {"imageIds": list(image_ids)})
        return _id_list(answer, "imageIds", "DeleteImages")

    async def describe_instances_status(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """Map each instance id to its status, 100 ids a call.

        Args:
            instance_ids: the instances to look up; unknown ids are absent from the result.
        """
        statuses: dict[str, str] = {}
        for chunk in _chunks(instance_ids):
            answer = await self.call("DescribeInstancesStatus", {"instanceIds": chunk, "pageSize": MAX_IDS_PER_CALL})
            data_set, _ = _listing(answer, "DescribeInstancesStatus")
            for item in data_set:
                if isinstance(item.get("instanceId"), str):
                    statuses[item["instanceId"]] = str(item.get("instanceStatus"))
        return statuses

    async def describe_instances(
        self,
        *,
        page_num: int = 1,
        page_size: int = MAX_PAGE_SIZE,
        zone_id: str | None = None,
        status: str | None = None,
        resource_group_id: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of DescribeInstances: its instances (InstanceInfo objects) and the total
        count matching the filters. One page a call, so that a caller can retry a page alone.

        Args:
            page_num: the page, 1 for the first.
            page_size: 1 to 1000 instances a page.
            zone_id: only instances in this zone.
            status: only instances in this state (``RUNNING``, ``STOPPED``, ...).
            resource_group_id: only instances in this resource group.
            tags: only instances holding every one of these ``(key, value)`` tags (at most 20).
        """
        params: dict[str, Any] = {"pageNum": page_num, "pageSize": page_size}
        optional = {"zoneId": zone_id, "status": status, "resourceGroupId": resource_group_id}
        params.update({k: v for k, v in optional.items() if v is not None})
        if tags:
            # A Describe filter takes a plain array of tags, not CreateImage's {"tags": [...]}.
            params["tags"] = [{"key": k, "value": v} for k, v in tags]
        answer = await self.call("DescribeInstances", params)
        return _listing(answer, "DescribeInstances")

    async def start_instances(self, instance_ids: Sequence[str]) -> list[str]:
        """Power on instances, 100 a call; returns the ids that failed to start.

        Args:
            instance_ids: the instances to start.
        """
        failed: list[str] = []
        for chunk in _chunks(instance_ids):
            answer = await self.call("StartInstances", {"instanceIds": chunk})
            failed += _id_list(answer, "instanceIds", "StartInstances")
        return failed

    async def stop_instances(self, instance_ids: Sequence[str], *, force_shutdown: bool | None = None) -> list[str]:
        """Power off instances, 100 a call; returns the ids that failed to stop.

        Args:
            instance_ids: the instances to stop.
            force_shutdown: the API forces when omitted; ``False`` asks for a clean shutdown.
        """
        failed: list[str] = []
        for chunk in _chunks(instance_ids):
            params: dict[str, Any] = {"instanceIds": chunk}
            if force_shutdown is not None:
                params["forceShutdown"] = force_shutdown
            answer = await self.call("StopInstances", params)
            failed += _id_list(answer, "instanceIds", "StopInstances")
        return failed


# ----- response shapes ------------------------------------------------------------------------


def _listing(answer: ApiResponse, action: str) -> tuple[list[dict[str, Any]], int]:
    data_set = answer.data.get("dataSet")
    total = answer.data.get("totalCount")
    if data_set is None:
        data_set = []
    if not isinstance(data_set, list) or not all(isinstance(i, dict) for i in data_set):
        text = f"{action} answered a 'dataSet' that is not a list of objects"
        raise malformed(action, text, answer.status, answer.request_id)
    if not isinstance(total, int):
        total = len(data_set)
    return data_set, total


def _id_list(answer: ApiResponse, key: str, action: str) -> list[str]:
    ids = answer.data.get(key) or []
    if not isinstance(ids, list):
        raise malformed(action, f"{action} answered a '{key}' that is not a list", answer.status, answer.request_id)
    return [str(i) for i in ids]
