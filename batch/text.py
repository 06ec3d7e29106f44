"""Small text helpers for messages people read."""

from __future__ import annotations

__all__ = ["clip"]


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
