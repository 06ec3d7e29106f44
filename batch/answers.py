"""What one HTTP exchange with the API means: a success envelope, or one of our errors.

The client sends; this module reads what came back (or what went wrong on the way) and maps it
to :mod:`batch.errors`, so the mapping rules live in one place and can be tested as tables.
"""

from __future__ import annotations

import errno
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from .errors import (
    AmbiguousError,
    ApiError,
    ConnectError,
    FatalRunError,
    LostAnswerError,
    PermanentJobError,
    ThrottledError,
    error_from_response,
    is_write_action,
)
from .text import clip

__all__ = [
    "MAX_RETRY_AFTER",
    "Answer",
    "ApiResponse",
    "Peer",
    "lost",
    "malformed",
    "network_error",
    "parse_answer",
    "parse_retry_after",
]

#: The longest wait a ``Retry-After`` may ask for; a bigger one (or a date far ahead) is cut to it,
#: so a broken proxy cannot park a run for hours.
MAX_RETRY_AFTER = 300.0

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A successful answer: the ``response`` object and its request id."""

    data: dict[str, Any]
    request_id: str | None
    status: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of an HTTP answer that decide what it means.

    Args:
        action: the API action that was called.
        status: HTTP status.
        body: the raw body.
        location: the ``Location`` header, when there was one.
        mitigated: the ``cf-mitigated`` header (edge security challenge), or ``""``.
        retry_after: seconds from the ``Retry-After`` header (see :func:`parse_retry_after`).
    """

    action: str
    status: int
    body: bytes
    location: str | None = None
    mitigated: str = ""
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` when absent or unreadable.

    Both RFC 9110 forms are read: delta-seconds (``120``; a decimal fraction is tolerated) and
    an HTTP-date. The result is clamped to ``[0, MAX_RETRY_AFTER]``: a date in the past means
    "now", a huge value no more than five minutes.

    Args:
        value: the header's value.
        now: the current wall-clock time (Unix seconds), to turn a date into a delay.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": no zone said; HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class Peer:
    """Where requests go and how long they may take, for messages about network failures.

    Args:
        host: the endpoint's host name (or address).
        port: its port (443 when the URL does not say).
        connect_timeout: the configured seconds to open a connection.
        total_timeout: the configured seconds for a whole request.
    """

    host: str
    port: int
    connect_timeout: float
    total_timeout: float

    @property
    def address(self) -> str:
        """``HOST:PORT``, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def network_error(exc: Exception, action: str, peer: Peer, *, status: int | None = None) -> ApiError:
    """Map an aiohttp (or time-out) exception to our error, said in words, not class names.

    Before the request left (DNS, refused, connect time-out, TLS) it is a :class:`ConnectError`,
    safe to resend; a certificate that fails verification is fatal for the run (every request
    would meet it). After it left, see :func:`lost`.

    Args:
        exc: what aiohttp (or the total time-out) raised.
        action: the API action being sent.
        peer: the endpoint and the configured time-outs.
        status: the HTTP status, when the failure came while reading the body.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        return FatalRunError("TLS_ERROR", f"TLS certificate verify failed for {peer.host}: {reason}", action=action)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        reason = getattr(exc.os_error, "reason", None) or exc.os_error
        return _connect(action, f"TLS handshake failed with {peer.address} ({reason}); is it an https port?")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _connect(action, f"DNS lookup failed for {peer.host}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return _connect(action, f"connection refused to {peer.address}")
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return _connect(action, f"cannot connect to {peer.address}: {reason}")
    # ConnectionTimeoutError is also a TimeoutError: test it before the total time-out.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _connect(action, f"connecting to {peer.address} timed out after {peer.connect_timeout:g} s")
    if isinstance(exc, TimeoutError):
        return lost(action, f"timed out after {peer.total_timeout:g} s waiting for {peer.address} to answer", status)
    if isinstance(exc, ConnectionResetError | aiohttp.ClientConnectionResetError) or (
        isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET
    ):
        return lost(action, f"connection reset by {peer.address} before the answer came", status)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return lost(action, f"{peer.address} closed the connection before answering", status)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return lost(action, f"the answer from {peer.address} was cut short", status)
    if isinstance(exc, aiohttp.ClientResponseError):  # e.g. a garbled status line: not HTTP as we know it
        return lost(action, f"{peer.address} answered with something that is not a valid HTTP response", status)
    return lost(action, f"connection to {peer.address} lost ({type(exc).__name__}: {clip(str(exc))})", status)


def lost(action: str, what: str, status: int | None = None) -> ApiError:
    """The request left but no whole answer came back.

    A write may have been applied (:class:`AmbiguousError`); a read changed nothing
    (:class:`LostAnswerError`).

    Args:
        action: the API action that was sent.
        what: what happened, for the message.
        status: the HTTP status, when one had arrived.
    """
    if is_write_action(action):
        return AmbiguousError(
            "NETWORK_ERROR", f"{what}; the request may have been applied", status=status, action=action
        )
    return LostAnswerError(
        "NETWORK_ERROR", f"{what}; a read changes nothing, so it is safe to ask again", status=status, action=action
    )


def _connect(action: str, what: str) -> ConnectError:
    return ConnectError("NETWORK_ERROR", f"{what}; the request was not sent", action=action)


def parse_answer(answer: Answer) -> ApiResponse:
    """Return the success envelope's ``response``, or raise the error the answer means.

    Args:
        answer: what came back.

    Raises:
        ApiError: one of its subclasses, chosen by status, code and action.
    """
    action, status = answer.action, answer.status
    if 300 <= status < 400:
        raise _redirect(answer)
    try:
        doc = json.loads(answer.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise _unreadable(answer)
    request_id = _str_or_none(doc.get("requestId"))
    if status == 200:
        response = doc.get("response")
        if not isinstance(response, dict):
            raise malformed(action, "HTTP 200 without a 'response' object in the envelope", status, request_id)
        return ApiResponse(response, request_id or _str_or_none(response.get("requestId")), status)
    code = doc.get("code")
    message = doc.get("message")
    raise error_from_response(
        status,
        code if isinstance(code, str) and code else f"HTTP_{status}",
        message if isinstance(message, str) else "(no message)",
        request_id,
        action,
        retry_after=answer.retry_after,
    )


def malformed(action: str, text: str, status: int | None, request_id: str | None = None) -> ApiError:
    """A ``MALFORMED_RESPONSE``: ambiguous for a write (it may have been applied), a lost answer
    for a read (nothing was changed, ask again).

    Args:
        action: the API action that was called.
        text: what was wrong with the answer.
        status: HTTP status.
        request_id: the answer's request id, when it had one.
    """
    cls = AmbiguousError if is_write_action(action) else LostAnswerError
    return cls("MALFORMED_RESPONSE", text, status=status, request_id=request_id, action=action)


def _redirect(answer: Answer) -> ApiError:
    # The API never redirects, so a 3xx means the endpoint is wrong (a portal, a proxy, an
    # http->https hop): every request would get the same answer, so stop the run, and never
    # follow it, which would send the signed body (or the bearer token) somewhere else.
    where = f"to {clip(answer.location, 200)}" if answer.location else "with no Location header"
    return FatalRunError(
        "UNEXPECTED_REDIRECT",
        f"the endpoint answered HTTP {answer.status}, a redirect {where}; the Zenlayer API never redirects, "
        "so the endpoint is wrong: set --endpoint / ZENLAYER_ENDPOINT to the API's own https URL",
        status=answer.status,
        action=answer.action,
    )


def _unreadable(answer: Answer) -> ApiError:
    action, status = answer.action, answer.status
    snippet = answer.body[:80].decode("utf-8", "replace").replace("\n", " ")
    text = f"HTTP {status} with a body that is not a JSON envelope: {snippet!r}"
    if status == 403 and answer.mitigated == "challenge":
        return FatalRunError(
            "SECURITY_CHALLENGE", "blocked by the edge security challenge", status=status, action=action
        )
    if status == 451:
        return FatalRunError("REQUEST_BLOCKED", "request blocked (HTTP 451)", status=status, action=action)
    if status == 429:
        return ThrottledError(
            "REQUEST_LIMIT_EXCEEDED", text, status=status, action=action, retry_after=answer.retry_after
        )
    if status == 200 or status >= 500:
        # A write may have been applied behind a garbled or gateway answer.
        return malformed(action, text, status)
    return PermanentJobError("MALFORMED_RESPONSE", text, status=status, action=action)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
