"""One compact JSON encoder for every hot path (request bodies, journal records, result lines,
events).

Built once, and called straight into the C encoder: ``json.dumps`` with options builds a new
encoder on every call, and even a prebuilt ``JSONEncoder.encode`` builds its C encoder again on
every call (about 40% of the cost of a ten-field event).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["compact_encoder", "compact_json"]


def compact_encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """A function that encodes a value as compact JSON (``ensure_ascii=False``), as ``json.dumps``
    with ``separators=(",", ":")`` would.

    Values are not checked for cycles: every value encoded here is built from parsed JSON and
    scalars (a cycle would end in ``RecursionError`` instead of ``ValueError``).

    Args:
        default: called for a value JSON cannot encode; ``None``: such a value is a ``TypeError``.
    """
    slow = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=default)
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python built without the C accelerator
        return slow.encode
    # The arguments JSONEncoder.iterencode passes, but no markers (no cycle check), built once.
    fast = make(None, slow.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode(value: Any) -> str:
        return "".join(fast(value, 0))

    return encode


compact_json = compact_encoder()
