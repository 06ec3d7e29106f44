"""One compact JSON encoder for every hot path (request bodies, journal records, result lines).

Built once: ``json.dumps`` with options builds a new encoder on every call.
"""

from __future__ import annotations

import json

__all__ = ["compact_json"]

compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
