"""Small text helpers for messages people read."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["clip", "rfc3339"]


def clip(value: object, limit: int = 80) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters with its full size said.

    A 10 MB field must not become a 10 MB error line: ``'abcd…'…(10485760 bytes)``.

    Args:
        value: what to quote (strings are quoted with ``repr``).
        limit: longest quoted text kept.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    size = len(text.encode("utf-8", "replace"))
    return f"{text[:limit]!r}…({size} bytes)"


def rfc3339(moment: float | datetime) -> str:
    """A time as an RFC 3339 UTC string with microseconds (``2026-11-30T05:23:56.123456Z``).

    Every time imagebatch writes (results, summary, run.json) uses this one form: it sorts as
    text, and any JSON tool reads it.

    Args:
        moment: Unix time, or an aware datetime.
    """
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
