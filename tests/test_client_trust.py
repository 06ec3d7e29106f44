"""The client does not trust the way to the API: no redirects, clear network errors, honest reads."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from batch import (
    AmbiguousError,
    ApiError,
    ConnectError,
    FatalRunError,
    RetryableError,
    ThrottledError,
    TransientServerError,
    ZecClient,
)
from batch.answers import Peer, network_error, parse_retry_after
from batch.errors import is_write_action

from .conftest import CREDS

pytestmark = pytest.mark.anyio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A one-route aiohttp app on loopback port 0; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_fatal_and_not_followed(status: int) -> None:
    """A 3xx from the endpoint stops the run naming the Location, and nothing is sent there."""
    reached: list[str] = []

    async def target(request: web.Request) -> web.Response:
        reached.append(request.method)
        return web.json_response({"requestId": "T1", "response": {"imageId": "img-x", "imageName": "n"}})

    async with serve(target) as elsewhere:

        async def redirect(_request: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": f"{elsewhere}/api/v2/zec"})

        async with serve(redirect) as url, ZecClient(url, CREDS) as client:
            with pytest.raises(FatalRunError) as info:
                await client.create_image("i-1", "img-1")
    assert reached == []
    err = info.value
    assert (err.code, err.status) == ("UNEXPECTED_REDIRECT", status)
    assert f"{elsewhere}/api/v2/zec" in str(err)
    assert "endpoint" in err.message


async def test_redirect_without_location_is_still_fatal() -> None:
    """A 3xx with no Location header is the same fatal error, saying the Location is missing."""

    async def redirect(_request: web.Request) -> web.Response:
        return web.Response(status=307)

    async with serve(redirect) as url, ZecClient(url, CREDS) as client:
        with pytest.raises(FatalRunError) as info:
            await client.describe_instances_status(["i-1"])
    assert info.value.code == "UNEXPECTED_REDIRECT"
    assert "no Location" in info.value.message


async def _drop(request: web.Request) -> web.Response:
    """Read the request, then close the connection without answering."""
    await request.read()
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


async def _garbage(request: web.Request) -> web.Response:
    """Answer 200 with a body that is not JSON."""
    await request.read()
    return web.Response(status=200, body=b"<html>")


async def _timed_out(request: web.Request) -> web.Response:
    """The server's own time-out: 504 REQUEST_TIMED_OUT."""
    await request.read()
    return web.json_response({"requestId": "T9", "code": "REQUEST_TIMED_OUT", "message": "m"}, status=504)


async def _never(request: web.Request) -> web.Response:
    """Never answer (until the server is stopped)."""
    await request.read()
    await asyncio.Event().wait()
    raise AssertionError


Call = Callable[[ZecClient], Awaitable[object]]

_WRITES: list[tuple[str, Call]] = [
    ("CreateImage", lambda c: c.create_image("i-1", "img-1")),
    ("DeleteImages", lambda c: c.delete_images(["img-1"])),
    ("StartInstances", lambda c: c.start_instances(["i-1"])),
    ("StopInstances", lambda c: c.stop_instances(["i-1"])),
    ("ModifyImagesAttributes", lambda c: c.call("ModifyImagesAttributes", {"imageIds": ["img-1"]})),
]
_READS: list[tuple[str, Call]] = [
    ("DescribeCustomImages", lambda c: _drain(c.describe_custom_images())),
    ("DescribeInstancesStatus", lambda c: c.describe_instances_status(["i-1"])),
]


async def _drain(items: AsyncIterator[object]) -> list[object]:
    return [i async for i in items]


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        pytest.param(_drop, "NETWORK_ERROR", id="dropped"),
        pytest.param(_never, "NETWORK_ERROR", id="read-timeout"),
        pytest.param(_garbage, "MALFORMED_RESPONSE", id="garbage-200"),
        pytest.param(_timed_out, "REQUEST_TIMED_OUT", id="504-request-timed-out"),
    ],
)
@pytest.mark.parametrize(
    ("action", "call", "write"),
    [pytest.param(a, c, True, id=a) for a, c in _WRITES] + [pytest.param(a, c, False, id=a) for a, c in _READS],
)
async def test_only_writes_may_have_committed(
    handler: Handler, code: str, action: str, call: Call, write: bool
) -> None:
    """A lost answer may hide a commit only for a write; a read's is plainly retryable, and says so."""
    # Only the handler that never answers needs a short time-out; the others must not race one.
    timeout = 0.3 if handler is _never else 60.0
    async with serve(handler) as url, ZecClient(url, CREDS, total_timeout=timeout) as client:
        with pytest.raises(RetryableError) as info:
            await call(client)
    err = info.value
    assert (err.action, err.code) == (action, code)
    assert err.may_have_committed is write
    assert isinstance(err, AmbiguousError) is (write and code != "REQUEST_TIMED_OUT")
    if code == "NETWORK_ERROR":
        assert ("may have been applied" in err.message) is write


@pytest.mark.parametrize(
    ("action", "write"),
    [
        pytest.param("CreateImage", True, id="CreateImage"),
        pytest.param("DeleteImages", True, id="DeleteImages"),
        pytest.param("StopInstances", True, id="StopInstances"),
        pytest.param("StartInstances", True, id="StartInstances"),
        pytest.param("ModifyImagesAttributes", True, id="ModifyImagesAttributes"),
        pytest.param("DescribeCustomImages", False, id="DescribeCustomImages"),
        pytest.param("DescribeInstancesStatus", False, id="DescribeInstancesStatus"),
        pytest.param("DescribeInstances", False, id="DescribeInstances"),
        pytest.param("RebootInstances", True, id="unknown-counts-as-write"),
        pytest.param(None, True, id="no-action-counts-as-write"),
    ],
)
def test_is_write_action(action: str | None, write: bool) -> None:
    """Writes, and anything not known to be a read, are treated as able to commit."""
    assert is_write_action(action) is write


def _free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_names_host_and_port() -> None:
    """Nothing listening: 'connection refused to HOST:PORT', not a class name."""
    port = _free_port()
    async with ZecClient(f"http://127.0.0.1:{port}", CREDS) as client:
        with pytest.raises(ConnectError) as info:
            await client.describe_instances_status(["i-1"])
    assert info.value.message.startswith(f"connection refused to 127.0.0.1:{port}")
    assert "ClientConnector" not in str(info.value)


async def test_answer_timeout_says_the_configured_seconds() -> None:
    """No answer within the total time-out: 'timed out after N s' with the configured N."""
    async with serve(_never) as url, ZecClient(url, CREDS, total_timeout=0.25) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.create_image("i-1", "img-1")
    assert "timed out after 0.25 s" in info.value.message
    assert url.removeprefix("http://") in info.value.message


async def test_dropped_connection_is_said_in_words() -> None:
    """The server closing the connection mid-request is said in words, with the address."""
    async with serve(_drop) as url, ZecClient(url, CREDS) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.create_image("i-1", "img-1")
    text = info.value.message
    # A close is seen as a disconnect or as a reset, depending on timing; both are said in words.
    assert "closed the connection before answering" in text or "connection reset by" in text
    assert url.removeprefix("http://") in text


async def test_tls_to_a_plain_port_is_a_handshake_failure() -> None:
    """https to a plain-http port: 'TLS handshake failed with HOST:PORT', the request not sent."""
    async with serve(_garbage) as url:
        port = url.rsplit(":", 1)[1]
        async with ZecClient(f"https://127.0.0.1:{port}", CREDS) as client:
            with pytest.raises(ConnectError) as info:
                await client.create_image("i-1", "img-1")
    assert info.value.message.startswith(f"TLS handshake failed with 127.0.0.1:{port}")
    assert "not sent" in info.value.message


_KEY = ConnectionKey("api.example.test", 443, True, True, None, None, None)
_PEER = Peer("api.example.test", 443, connect_timeout=7, total_timeout=30)


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        pytest.param(
            aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")),
            ConnectError,
            "DNS lookup failed for api.example.test",
            id="dns",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(
                _KEY, ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
            ),
            FatalRunError,
            "TLS certificate verify failed for api.example.test",
            id="certificate",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connection refused")),
            ConnectError,
            "connection refused to api.example.test:443",
            id="refused",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(_KEY, OSError(113, "No route to host")),
            ConnectError,
            "cannot connect to api.example.test:443: No route to host",
            id="no-route",
        ),
        pytest.param(
            aiohttp.ConnectionTimeoutError("Connection timeout to host"),
            ConnectError,
            "connecting to api.example.test:443 timed out after 7 s",
            id="connect-timeout",
        ),
        pytest.param(TimeoutError(), AmbiguousError, "timed out after 30 s waiting for", id="total-timeout"),
        pytest.param(
            aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
            AmbiguousError,
            "connection reset by api.example.test:443",
            id="reset",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            AmbiguousError,
            "api.example.test:443 closed the connection before answering",
            id="disconnected",
        ),
        pytest.param(
            aiohttp.ClientPayloadError("Response payload is not completed"),
            AmbiguousError,
            "the answer from api.example.test:443 was cut short",
            id="cut-short",
        ),
    ],
)
def test_network_errors_in_words(exc: Exception, cls: type[ApiError], text: str) -> None:
    """Each network failure maps to its class with a message in words naming host, port or timeout."""
    err = network_error(exc, "CreateImage", _PEER)
    assert type(err) is cls
    assert err.message.startswith(text)
    assert type(exc).__name__ not in err.message


def test_peer_address_brackets_ipv6() -> None:
    """An IPv6 endpoint is written [addr]:port in messages."""
    assert Peer("::1", 9, 1, 1).address == "[::1]:9"


_NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("5", 5.0, id="delta"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 7 ", 7.0, id="spaces"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("100000", 300.0, id="huge-clamped"),
        pytest.param("9" * 400, 300.0, id="enormous-clamped"),
        pytest.param("Tue, 14 Nov 2023 22:13:30 GMT", 10.0, id="date-ahead"),
        pytest.param("Tue, 14 Nov 2023 22:13:30 -0000", 10.0, id="date-no-zone"),
        pytest.param("Tue, 14 Nov 2023 22:00:00 GMT", 0.0, id="date-past"),
        pytest.param("Wed, 15 Nov 2023 22:13:20 GMT", 300.0, id="date-far"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("-3", None, id="negative"),
        pytest.param("1e3", None, id="exponent"),
        pytest.param("nan", None, id="nan"),
        pytest.param("soon", None, id="word"),
        pytest.param("Tue, 99 Nov 2023 22:13:30 GMT", None, id="bad-date"),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """Retry-After as delta-seconds or an HTTP-date, clamped to [0, 300]; garbage is ignored."""
    assert parse_retry_after(value, _NOW) == seconds


@pytest.mark.parametrize(
    ("body", "header", "seconds"),
    [
        pytest.param(b'{"code": "REQUEST_LIMIT_EXCEEDED", "message": "m"}', "3", 3.0, id="envelope-delta"),
        pytest.param(b"slow down", "Tue, 14 Nov 2023 22:13:24 GMT", 4.0, id="text-date"),
        pytest.param(b'{"code": "REQUEST_LIMIT_EXCEEDED", "message": "m"}', "later", None, id="garbage"),
    ],
)
async def test_throttled_error_carries_retry_after(body: bytes, header: str, seconds: float | None) -> None:
    """A 429's Retry-After reaches ThrottledError.retry_after through the real client."""

    async def throttle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=429, body=body, headers={"Retry-After": header})

    async with serve(throttle) as url, ZecClient(url, CREDS, clock=lambda: _NOW) as client:
        with pytest.raises(ThrottledError) as info:
            await client.create_image("i-1", "img-1")
    assert info.value.retry_after == seconds


async def test_retry_after_only_on_throttling() -> None:
    """A Retry-After on another error (a 503) is not attached: only throttling carries it."""

    async def unavailable(request: web.Request) -> web.Response:
        await request.read()
        body = {"code": "SERVICE_TEMPORARY_UNAVAILABLE", "message": "m"}
        return web.json_response(body, status=503, headers={"Retry-After": "9"})

    async with serve(unavailable) as url, ZecClient(url, CREDS) as client:
        with pytest.raises(TransientServerError) as info:
            await client.describe_instances_status(["i-1"])
    assert info.value.retry_after is None


async def test_a_garbled_status_line_is_said_in_words() -> None:
    """A server that does not speak HTTP (a garbled status line) is said in words, not a class name."""
    import asyncio

    from batch.client import ZecClient
    from batch.credentials import Credentials

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with ZecClient(f"http://127.0.0.1:{port}", Credentials("k", "s")) as client:
            with pytest.raises(ApiError) as caught:
                await client.call("DescribeCustomImages", {})
    finally:
        server.close()
        await server.wait_closed()
    assert "not a valid HTTP response" in str(caught.value)
    assert "ClientResponseError" not in str(caught.value)
