"""The client does not trust the way to the API: no redirects, clear network errors, honest reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from batch import FatalRunError, ZecClient

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
