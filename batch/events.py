"""Structured event log (``events.jsonl``) built on structlog.

Event names are dotted constants; fields never include a credential, a header or a request
body. Each run gets its own logger writing to its own file: no global structlog state is touched.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = [
    "ATTEMPT",
    "JOB_ENDED",
    "LISTING_DONE",
    "RETRY_SCHEDULED",
    "RUN_ENDED",
    "RUN_STARTED",
    "RUN_STOPPING",
    "THROTTLE_DECREASED",
    "EventLog",
]

RUN_STARTED = "run.started"
RUN_STOPPING = "run.stopping"
RUN_ENDED = "run.ended"
LISTING_DONE = "listing.done"
ATTEMPT = "api.attempt"
RETRY_SCHEDULED = "job.retry_scheduled"
JOB_ENDED = "job.ended"
THROTTLE_DECREASED = "throttle.decreased"


def _add_time(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = round(time.time(), 6)
    return event


class EventLog:
    """A structlog logger that writes one JSON object a line to ``stream``.

    Args:
        stream: an open text file (line-buffered writes are not needed: it is flushed on close).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.log = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[_add_time, structlog.processors.JSONRenderer(separators=(",", ":"))],
        )

    def close(self) -> None:
        """Flush and close the file."""
        self._stream.flush()
        self._stream.close()
