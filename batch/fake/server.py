"""The fake Zenlayer API: a real aiohttp server on loopback that behaves like ``zec``.

It checks signatures, keeps state (:mod:`.state`), rate-limits with a token bucket, adds
latency, and injects seeded faults: 5xx answers, and *lost responses*, where CreateImage
commits the image and then drops the connection without answering; and scripted faults for any
action, per instance or image id (:mod:`.scripts`). ``GET /_fake/inspect`` shows (read-only)
what happened, so tests can prove there is no duplicate image and every stopped instance runs
again; ``GET /_fake/images`` shows every image with its tags, and the DeleteImages calls that
named each (:mod:`.images`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .auth import verify_request
from .constants import API_VERSION, DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_TOKEN, SERVICE
from .errors import FakeApiError, InvalidParameter, RateLimited, UnauthorizedOperation
from .handlers import HANDLERS
from .images import images_view
from .scripts import ScriptBook
from .state import FakeCloud

__all__ = ["DEFAULT_ACCESS_KEY_ID", "DEFAULT_ACCESS_KEY_SECRET", "DEFAULT_TOKEN", "FakeConfig", "FakeZenlayer"]

#: The whole-call errors scripted 5xx outcomes answer with.
_SCRIPTED_5XX = {"500": "INTERNAL_SERVER_ERROR", "503": "SERVICE_TEMPORARY_UNAVAILABLE", "504": "REQUEST_TIMED_OUT"}


@dataclass
class FakeConfig:
    """How the fake behaves. Every field is also a flag of ``imagebatch fake-server``.

    Args:
        access_key_id: the one access key the fake accepts.
        access_key_secret: its secret.
        tokens: bearer tokens the fake accepts.
        rate_limit: requests per second across all actions (``None``: unlimited).
        burst: token-bucket size (requests); defaults to one second's worth of ``rate_limit``.
            The real API's is not documented: a small one punishes bursty clients.
        retry_after: send a ``Retry-After`` header (whole seconds, at least 1) with every 429:
            the time until the bucket holds a request again, rounded up.
        latency: seconds added before each answer.
        error_rate: share of requests answered with a 5xx before anything is done.
        lost_response_rate: share of successful CreateImage calls whose answer is dropped
            after the image was committed.
        seed: seed of the fault dice.
        max_skew: allowed difference between X-ZC-Timestamp and the server clock, seconds.
        scripts: per action and id, the outcomes of the next calls that name the id, in order:
            ``{"StartInstances": {"i-3": ["fail", "fail", "ok"]}}``; the id ``*`` matches every
            call of the action. An id mapped straight to a list scripts CreateImage:
            ``{"i-1": ["lost", "ok"]}``. Outcomes: see :mod:`batch.fake.scripts`.
    """

    access_key_id: str = DEFAULT_ACCESS_KEY_ID
    access_key_secret: str = field(default=DEFAULT_ACCESS_KEY_SECRET, repr=False)
    tokens: frozenset[str] = field(default=frozenset({DEFAULT_TOKEN}), repr=False)
    rate_limit: float | None = None
    burst: float | None = None
    retry_after: bool = False
    latency: float = 0.0
    error_rate: float = 0.0
    lost_response_rate: float = 0.0
    #: the actions whose answers ``lost_response_rate`` drops ("*": every action)
    lost_actions: tuple[str, ...] = ("CreateImage",)
    seed: int = 0
    max_skew: float = 300.0
    scripts: Mapping[str, Sequence[str] | Mapping[str, Sequence[str]]] = field(default_factory=dict)


class _TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until the bucket holds one request again (as of the last :meth:`take`)."""
        return max(0.0, (1 - self.tokens) / self.rate)


class _DropConnectionError(Exception):
    """Raised by a handler to close the connection without answering."""


class FakeZenlayer:
    """The fake server. ``await start()`` binds loopback port 0 (or ``port``) and returns its URL.

    Args:
        cloud: the state it serves.
        config: behaviour and faults.
        wall_clock: clock for signature timestamps (tests move it to test skew).
    """

    def __init__(
        self,
        cloud: FakeCloud | None = None,
        config: FakeConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cloud = cloud if cloud is not None else FakeCloud()
        self.config = config if config is not None else FakeConfig()
        self.wall_clock = wall_clock
        self.calls: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.lost_responses = 0
        #: per second since the first request: [requests, 429 answers]
        self.timeline: list[list[int]] = []
        self._first_request: float | None = None
        self._random = random.Random(self.config.seed)  # noqa: S311 - fault dice, not crypto
        self._scripts = ScriptBook(self.config.scripts)  # a bad script raises ScriptError (a ValueError)
        rate = self.config.rate_limit
        self._bucket = _TokenBucket(rate, self.config.burst or max(1.0, rate), self.cloud.clock) if rate else None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----- lifecycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (routes only; no state of its own)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/api/v2/{service}", self._handle)
        app.router.add_get("/_fake/inspect", self._inspect)
        app.router.add_get("/_fake/images", self._images)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (port 0: any free port) and return the base URL."""
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sock_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        shown = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL
        self.url = f"http://{shown}:{sock_port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----- requests --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        request_id = "T" + str(uuid.uuid4()).upper()
        action = request.headers.get("X-ZC-Action", "")
        self.calls[action or "(none)"] += 1
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        second = self._tick()
        try:
            result = self._dispatch(request, body, action)
        except _DropConnectionError:
            self.lost_responses += 1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        except FakeApiError as err:
            self.codes[err.code] += 1
            if err.status == 429:
                second[1] += 1
            payload = {"requestId": request_id, "code": err.code, "message": err.message}
            headers = {}
            if err.status == 429 and self.config.retry_after:
                headers["Retry-After"] = str(self._retry_after())
            return web.json_response(payload, status=err.status, headers=headers)
        if result is None:  # scripted garbage
            return web.Response(body=b"<html>502 Bad Gateway</html>", status=502, content_type="text/html")
        self.codes["OK"] += 1
        return web.json_response({"requestId": request_id, "response": {"requestId": request_id, **result}})

    def _retry_after(self) -> int:
        """Retry-After for a 429: HTTP allows only whole seconds, so at least 1."""
        wait = self._bucket.wait() if self._bucket is not None else 0.0
        return max(1, math.ceil(wait))

    def _tick(self) -> list[int]:
        """Count a request in the timeline; return its second's counters."""
        now = self.cloud.clock()
        if self._first_request is None:
            self._first_request = now
        index = int(now - self._first_request)
        while len(self.timeline) <= index:
            self.timeline.append([0, 0])
        self.timeline[index][0] += 1
        return self.timeline[index]

    def _dispatch(self, request: web.Request, body: bytes, action: str) -> dict[str, Any] | None:
        if self._bucket is not None and not self._bucket.take():
            raise RateLimited("request rate limit exceeded")
        verify_request(
            request.headers,
            body,
            keys={self.config.access_key_id: self.config.access_key_secret},
            tokens=self.config.tokens,
            now=self.wall_clock(),
            max_skew=self.config.max_skew,
        )
        if request.match_info["service"] != SERVICE or action not in HANDLERS:
            raise UnauthorizedOperation(f"action {action!r} does not exist in this service")
        if request.headers.get("X-ZC-Version") != API_VERSION:
            raise InvalidParameter(f"X-ZC-Version must be {API_VERSION} for {action}")
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            params = None
        if not isinstance(params, dict):
            raise InvalidParameter("body must be a JSON object", code="INVALID_PARAMETER_TYPE")
        if self.config.error_rate and self._random.random() < self.config.error_rate:
            raise FakeApiError("injected server error", code="SERVICE_TEMPORARY_UNAVAILABLE", status=503)
        self.cloud.advance()
        if action == "CreateImage":
            return self._create_image(params)
        return self._scripted(action, params)

    def _create_image(self, params: dict[str, Any]) -> dict[str, Any] | None:
        return self._scripted("CreateImage", params)

    def _scripted(self, action: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run the action as its scripts say; ``None`` for a scripted garbage answer."""
        taken = self._scripts.take(action, params)
        outcome = taken.call
        if outcome in _SCRIPTED_5XX:
            if outcome == "504":  # a server-side time-out after the work was done
                HANDLERS[action](self.cloud, params, taken)
            raise FakeApiError("scripted server error", code=_SCRIPTED_5XX[outcome], status=int(outcome))
        if outcome == "busy":
            raise FakeApiError("scripted busy", code="OPERATION_DENIED_INSTANCE_IN_OPERATION", status=400)
        if outcome == "429":
            raise RateLimited("scripted rate limit")
        if outcome == "drop":
            raise _DropConnectionError
        result = HANDLERS[action](self.cloud, params, taken)
        if outcome == "garbage":
            return None
        if outcome == "lost" or (
            (action in self.config.lost_actions or "*" in self.config.lost_actions)
            and self.config.lost_response_rate
            and self._random.random() < self.config.lost_response_rate
        ):
            raise _DropConnectionError
        return result

    async def _images(self, _request: web.Request) -> web.Response:
        return web.json_response(images_view(self.cloud))

    async def _inspect(self, _request: web.Request) -> web.Response:
        return web.json_response(self.inspect())

    def inspect(self) -> dict[str, Any]:
        """What the fake has seen and holds: calls, error codes, images per instance, power.

        The power fields: ``instanceStates`` (id: status); ``peakStopped`` (the most instances,
        RUNNING at the start, that were down at one moment: from an accepted StopInstances until
        RUNNING again); ``stoppedNow`` (how many are down now); ``notRunningAnymore`` (ids
        RUNNING at the start and not RUNNING now); ``forcedStops`` / ``gracefulStops``
        (accepted instance stops); ``startsAccepted`` (accepted instance starts);
        ``stopWithoutForceField`` (StopInstances calls that left ``forceShutdown`` out).
        """
        self.cloud.advance()
        created = self.cloud.created_per_instance
        power = self.cloud.power
        instances = self.cloud.instances
        return {
            "calls": dict(self.calls),
            "codes": dict(self.codes),
            "lostResponses": self.lost_responses,
            "instances": len(self.cloud.instances),
            "images": len(self.cloud.images),
            "createdPerInstance": dict(created),
            "imagesPerInstance": self.cloud.images_per_instance(),
            "duplicateInstances": sorted(i for i, n in created.items() if n > 1),
            "timeline": self.timeline,
            "instanceStates": {i: inst.status for i, inst in instances.items()},
            "peakStopped": power.peak_down,
            "stoppedNow": len(power.down),
            "notRunningAnymore": sorted(i for i in power.initially_running if instances[i].status != "RUNNING"),
            "forcedStops": power.forced_stops,
            "gracefulStops": power.graceful_stops,
            "startsAccepted": power.starts,
            "stopWithoutForceField": power.stops_without_force_field,
        }
