"""What one HTTP exchange with the API means: a success envelope, or one of our errors.

The client sends; this module reads what came back (or what went wrong on the way) and maps it
to :mod:`batch.errors`, so the mapping rules live in one place and can be tested as tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import (
    AmbiguousError,
    ApiError,
    FatalRunError,
    LostAnswerError,
    PermanentJobError,
    ThrottledError,
    error_from_response,
    is_write_action,
)
from .text import clip

__all__ = ["Answer", "ApiResponse", "malformed", "parse_answer"]


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
    """

    action: str
    status: int
    body: bytes
    location: str | None = None
    mitigated: str = ""


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
        return ThrottledError("REQUEST_LIMIT_EXCEEDED", text, status=status, action=action)
    if status == 200 or status >= 500:
        # A write may have been applied behind a garbled or gateway answer.
        return malformed(action, text, status)
    return PermanentJobError("MALFORMED_RESPONSE", text, status=status, action=action)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
