"""The zec client against the fake server over loopback: every action, every error class."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web

from batch import (
    AmbiguousError,
    AuthenticationError,
    ConnectError,
    Credentials,
    InstanceBusyError,
    PermanentJobError,
    QuotaExceededError,
    RequestRecord,
    ThrottledError,
    TransientServerError,
    UsageError,
    ZecClient,
)
from batch.errors import FatalRunError
from batch.fake import DEFAULT_TOKEN, FakeInstance

from .conftest import CREDS, FakeFactory, instances

pytestmark = pytest.mark.anyio


async def test_create_image_then_describe(make_fake: FakeFactory) -> None:
    """CreateImage returns the new id; DescribeCustomImages lists it CREATING, then AVAILABLE."""
    fake = await make_fake(instances("i-1"), cloud_kwargs={"image_ready_seconds": 0.05})
    async with ZecClient(fake.url, CREDS) as client:
        created = await client.create_image("i-1", "img-one", tags=[("env", "prod")], resource_group_id="rg-1")
        assert created.image_name == "img-one"
        assert created.request_id
        assert created.request_id.startswith("T")
        listed = [i async for i in client.describe_custom_images(image_name="img-one")]
        assert [(i["imageId"], i["imageStatus"]) for i in listed] == [(created.image_id, "CREATING")]
        assert listed[0]["tags"] == {"tags": [{"key": "env", "value": "prod"}]}
        await asyncio.sleep(0.1)
        listed = [i async for i in client.describe_custom_images(image_ids=[created.image_id])]
        assert listed[0]["imageStatus"] == "AVAILABLE"


async def test_describe_custom_images_paginates(make_fake: FakeFactory) -> None:
    """A listing larger than a page is read page by page, every image once."""
    fake = await make_fake(instances(*[f"i-{n}" for n in range(25)]), cloud_kwargs={"image_ready_seconds": 0})
    for n in range(25):
        fake.cloud.create_image(f"i-{n}", f"img-{n:02d}", None, [])
    async with ZecClient(fake.url, CREDS) as client:
        names = [i["imageName"] async for i in client.describe_custom_images(page_size=10)]
    assert sorted(names) == [f"img-{n:02d}" for n in range(25)]
    assert fake.calls["DescribeCustomImages"] == 3


async def test_delete_images_reports_failures(make_fake: FakeFactory) -> None:
    """DeleteImages returns the ids it could not delete."""
    fake = await make_fake(instances("i-1"), cloud_kwargs={"image_ready_seconds": 0, "transition_seconds": 0})
    image = fake.cloud.create_image("i-1", "img-1", None, [])
    fake.cloud.advance()
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.delete_images([image.image_id, "img-missing"]) == ["img-missing"]
        await asyncio.sleep(0.01)
        assert [i async for i in client.describe_custom_images()] == []


async def test_instance_power_and_status_chunk_by_100(make_fake: FakeFactory) -> None:
    """Start/Stop and DescribeInstancesStatus send at most 100 ids a call."""
    ids = [f"i-{n:03d}" for n in range(250)]
    fake = await make_fake(instances(*ids), cloud_kwargs={"transition_seconds": 0})
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.start_instances(ids) == []
        assert fake.calls["StartInstances"] == 3
        await asyncio.sleep(0.01)
        statuses = await client.describe_instances_status(ids)
        assert fake.calls["DescribeInstancesStatus"] == 3
        assert set(statuses.values()) == {"RUNNING"}
        assert await client.stop_instances(ids[:1], force_shutdown=True) == []
        await asyncio.sleep(0.01)
        assert (await client.describe_instances_status(ids[:1])) == {"i-000": "STOPPED"}


async def test_single_instance_power_errors(make_fake: FakeFactory) -> None:
    """Starting a running instance is OPERATION_DENIED_INSTANCE_NOT_STOPPED (403), a permanent error."""
    fake = await make_fake([FakeInstance("i-1", status="RUNNING")])
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(PermanentJobError) as info:
            await client.start_instances(["i-1"])
    assert (info.value.code, info.value.status) == ("OPERATION_DENIED_INSTANCE_NOT_STOPPED", 403)


@pytest.mark.parametrize(
    ("fleet", "name", "error", "code"),
    [
        pytest.param([], "img-x", PermanentJobError, "INVALID_INSTANCE_NOT_FOUND", id="not-found"),
        pytest.param(
            [FakeInstance("i-1", gpu=True)],
            "img-x",
            PermanentJobError,
            "OPERATION_DENIED_GPU_INSTANCE_NOT_SUPPORT",
            id="gpu",
        ),
        pytest.param(
            [FakeInstance("i-1", status="RUNNING")],
            "img-x",
            PermanentJobError,
            "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT",
            id="running",
        ),
        pytest.param(
            [FakeInstance("i-1", busy_until=60)],
            "img-x",
            InstanceBusyError,
            "OPERATION_DENIED_INSTANCE_IN_OPERATION",
            id="busy",
        ),
        pytest.param(
            [FakeInstance("i-1")], "-bad", PermanentJobError, "INVALID_PARAMETER_PATTERN_ERROR", id="bad-name"
        ),
        pytest.param(
            [FakeInstance("i-1")], "x" * 64, PermanentJobError, "INVALID_PARAMETER_EXCEED_LENGTH", id="long-name"
        ),
    ],
)
async def test_create_image_error_classes(
    make_fake: FakeFactory, fleet: list[FakeInstance], name: str, error: type[Exception], code: str
) -> None:
    """Each documented CreateImage failure maps to the class the scheduler acts on, with its context."""
    fake = await make_fake(fleet)
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(error) as info:
            await client.create_image("i-1", name)
    err = info.value
    assert err.code == code  # type: ignore[attr-defined]
    assert err.status in (400, 404)  # type: ignore[attr-defined]
    assert err.request_id.startswith("T")  # type: ignore[attr-defined]
    assert err.action == "CreateImage"  # type: ignore[attr-defined]


async def test_quota_exceeded_is_fatal(make_fake: FakeFactory) -> None:
    """INVALID_IMAGE_QUOTA_EXCEED stops a run: it is a QuotaExceededError (FatalRunError)."""
    fake = await make_fake(instances("i-1", "i-2"), cloud_kwargs={"image_quota": 1})
    async with ZecClient(fake.url, CREDS) as client:
        await client.create_image("i-1", "img-1")
        with pytest.raises(QuotaExceededError) as info:
            await client.create_image("i-2", "img-2")
    assert isinstance(info.value, FatalRunError)
    assert info.value.code == "INVALID_IMAGE_QUOTA_EXCEED"


async def test_rate_limit_is_throttled_error(make_fake: FakeFactory) -> None:
    """Past the fake's bucket the answer is 429 REQUEST_LIMIT_EXCEEDED -> ThrottledError."""
    fake = await make_fake(instances("i-1"), rate_limit=1, burst=1)
    async with ZecClient(fake.url, CREDS) as client:
        await client.describe_instances_status(["i-1"])
        with pytest.raises(ThrottledError) as info:
            await client.describe_instances_status(["i-1"])
    assert (info.value.status, info.value.code) == (429, "REQUEST_LIMIT_EXCEEDED")


@pytest.mark.parametrize(
    ("outcome", "error", "code", "committed"),
    [
        pytest.param("500", TransientServerError, "INTERNAL_SERVER_ERROR", False, id="500"),
        pytest.param("503", TransientServerError, "SERVICE_TEMPORARY_UNAVAILABLE", False, id="503"),
        pytest.param("504", TransientServerError, "REQUEST_TIMED_OUT", True, id="504-timed-out"),
        pytest.param("lost", AmbiguousError, "NETWORK_ERROR", True, id="lost-response"),
        pytest.param("drop", AmbiguousError, "NETWORK_ERROR", True, id="dropped"),
        pytest.param("garbage", AmbiguousError, "MALFORMED_RESPONSE", True, id="non-json-502"),
    ],
)
async def test_server_faults(
    make_fake: FakeFactory, outcome: str, error: type[Exception], code: str, committed: bool
) -> None:
    """Scripted faults map to transient or ambiguous errors; ambiguous ones say a write may be applied."""
    fake = await make_fake(instances("i-1"), scripts={"i-1": [outcome]})
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(error) as info:
            await client.create_image("i-1", "img-1")
    assert info.value.code == code  # type: ignore[attr-defined]
    assert info.value.may_have_committed is committed  # type: ignore[attr-defined]


async def test_lost_response_commits_the_image(make_fake: FakeFactory) -> None:
    """A lost response really created the image: the fake's inspection shows it."""
    fake = await make_fake(instances("i-1"), scripts={"i-1": ["lost"]})
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(AmbiguousError):
            await client.create_image("i-1", "img-1")
        names = [i["imageName"] async for i in client.describe_custom_images(image_name="img-1")]
    assert names == ["img-1"]
    assert fake.inspect()["createdPerInstance"] == {"i-1": 1}
    assert fake.inspect()["lostResponses"] == 1


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening: ConnectError, safe to resend."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ZecClient(f"http://127.0.0.1:{port}", CREDS, connect_timeout=2) as client:
        with pytest.raises(ConnectError) as info:
            await client.create_image("i-1", "img-1")
    assert info.value.may_have_committed is False


async def test_read_timeout_is_ambiguous(make_fake: FakeFactory) -> None:
    """An answer slower than the total timeout: AmbiguousError (the server may have acted)."""
    fake = await make_fake(instances("i-1"), latency=1.0)
    async with ZecClient(fake.url, CREDS, total_timeout=0.2) as client:
        with pytest.raises(AmbiguousError):
            await client.create_image("i-1", "img-1")


@pytest.mark.parametrize(
    ("creds", "code"),
    [
        pytest.param(
            Credentials(CREDS.access_key_id, "wrong-secret"), "AUTHFAILURE_SIGNATURE_FAILURE", id="wrong-secret"
        ),
        pytest.param(Credentials("unknown-key", CREDS.secret), "AUTHFAILURE_INVALID_AUTHORIZATION", id="unknown-key"),
        pytest.param(
            Credentials(None, "not-a-token", bearer=True), "AUTHFAILURE_INVALID_AUTHORIZATION", id="bad-token"
        ),
    ],
)
async def test_bad_credentials_are_fatal(make_fake: FakeFactory, creds: Credentials, code: str) -> None:
    """Refused credentials: AuthenticationError with the AUTHFAILURE code, and no secret in the text."""
    fake = await make_fake(instances("i-1"))
    async with ZecClient(fake.url, creds) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.create_image("i-1", "img-1")
    assert info.value.code == code
    assert info.value.status == 401
    assert creds.secret not in str(info.value)
    assert creds.secret not in repr(client)


async def test_stale_timestamp_is_expired(make_fake: FakeFactory) -> None:
    """A clock 10 minutes off gets AUTHFAILURE_SIGNATURE_EXPIRED; 4 minutes off is accepted."""
    fake = await make_fake(instances("i-1"))
    async with ZecClient(fake.url, CREDS, clock=lambda: time.time() - 600) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.describe_instances_status(["i-1"])
    assert info.value.code == "AUTHFAILURE_SIGNATURE_EXPIRED"
    async with ZecClient(fake.url, CREDS, clock=lambda: time.time() + 240) as client:
        assert await client.describe_instances_status(["i-1"]) == {"i-1": "STOPPED"}


async def test_bearer_token_mode(make_fake: FakeFactory) -> None:
    """A valid bearer token works with no signature headers."""
    fake = await make_fake(instances("i-1"))
    async with ZecClient(fake.url, Credentials(None, DEFAULT_TOKEN, bearer=True)) as client:
        created = await client.create_image("i-1", "img-1")
    assert created.image_id.startswith("img-")


async def test_observer_and_gate_see_every_request(make_fake: FakeFactory) -> None:
    """The gate runs before and the observer after each HTTP request, pages included."""
    fake = await make_fake(instances("i-1", "i-2"), cloud_kwargs={"image_ready_seconds": 0})
    for n in (1, 2):
        fake.cloud.create_image(f"i-{n}", f"img-{n}", None, [])
    gated: list[str] = []
    seen: list[RequestRecord] = []

    async def gate(action: str) -> None:
        gated.append(action)

    async with ZecClient(fake.url, CREDS, gate=gate, observer=seen.append) as client:
        assert len([i async for i in client.describe_custom_images(page_size=1)]) == 2
        with pytest.raises(PermanentJobError):
            await client.create_image("i-404", "img-x")
    assert gated == ["DescribeCustomImages", "DescribeCustomImages", "CreateImage"]
    assert [(r.action, r.status, r.code) for r in seen] == [
        ("DescribeCustomImages", 200, None),
        ("DescribeCustomImages", 200, None),
        ("CreateImage", 404, "INVALID_INSTANCE_NOT_FOUND"),
    ]


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/api/v2/zec", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        pytest.param(200, b"not json", AmbiguousError, "MALFORMED_RESPONSE", id="200-not-json"),
        pytest.param(200, b'{"requestId": "T1"}', AmbiguousError, "MALFORMED_RESPONSE", id="200-no-response"),
        pytest.param(
            200, b'{"requestId": "T1", "response": {}}', AmbiguousError, "MALFORMED_RESPONSE", id="200-no-image-id"
        ),
        pytest.param(400, b"[1, 2]", PermanentJobError, "MALFORMED_RESPONSE", id="400-array"),
        pytest.param(418, b'{"requestId": "T2"}', PermanentJobError, "HTTP_418", id="4xx-no-code"),
        pytest.param(503, b"<html>", AmbiguousError, "MALFORMED_RESPONSE", id="503-html"),
        pytest.param(
            500, b'{"code": "X_UNKNOWN", "message": "m"}', TransientServerError, "X_UNKNOWN", id="5xx-unknown"
        ),
        pytest.param(429, b"slow down", ThrottledError, "REQUEST_LIMIT_EXCEEDED", id="429-text"),
        pytest.param(451, b"", FatalRunError, "REQUEST_BLOCKED", id="451"),
    ],
)
async def test_malformed_answers_are_errors_not_crashes(
    status: int, body: bytes, error: type[Exception], code: str
) -> None:
    """Any answer that is not a proper envelope becomes a clear error of the right class."""

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    runner, url = await _serve(handler)
    try:
        async with ZecClient(url, CREDS) as client:
            with pytest.raises(error) as info:
                await client.create_image("i-1", "img-1")
    finally:
        await runner.cleanup()
    assert info.value.code == code  # type: ignore[attr-defined]


async def test_request_is_signed_as_sent() -> None:
    """The client sends compact JSON, application/json and the Host it signs (port included)."""
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        return web.json_response({"requestId": "T1", "response": {"imageId": "img-1", "imageName": "n1"}})

    runner, url = await _serve(handler)
    try:
        async with ZecClient(url, CREDS) as client:
            await client.create_image("i-1", "n1")
    finally:
        await runner.cleanup()
    headers = seen["headers"]
    assert seen["body"] == json.dumps({"instanceId": "i-1", "imageName": "n1"}, separators=(",", ":")).encode()
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == url.removeprefix("http://")
    assert headers["X-ZC-Action"] == "CreateImage"
    assert headers["X-ZC-Version"] == "2025-09-01"
    assert headers["Authorization"].startswith(
        "ZC2-HMAC-SHA256 Credential=fake-access-key-id, SignedHeaders=content-type;host"
    )


@pytest.mark.parametrize(
    "endpoint",
    ["http://console.zenlayer.com", "ftp://127.0.0.1", "https://", "https://u:p@host", "https://host/api/v2/zec"],
)
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    """Plain http beyond loopback, other schemes, credentials or paths in the URL are usage errors."""
    with pytest.raises(UsageError):
        ZecClient(endpoint, CREDS)


def test_https_and_loopback_http_are_accepted() -> None:
    """https anywhere; http only on loopback."""
    for endpoint in ("https://console.zenlayer.com", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"):
        assert ZecClient(endpoint, CREDS).url.path == "/api/v2/zec"
