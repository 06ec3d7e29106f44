"""Structured event log (``events.jsonl``) built on structlog.

Event names are dotted constants; fields never include a credential, a header or a request
body. Each run gets its own logger writing to its own file: no global structlog state is touched.
The file is buffered, so logging costs no system call per event. It is flushed (``write(2)``, no
fsync) before each group of journal records is written, about once a second, and on close: every
event logged before a job's result is in the file when that result is, even after ``kill -9``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from ._jsonenc import compact_encoder
from .text import rfc3339

__all__ = [
    "ATTEMPT",
    "JOB_ENDED",
    "LISTING_DONE",
    "RETRY_SCHEDULED",
    "RUN_ENDED",
    "RUN_STARTED",
    "RUN_STOPPING",
    "EventLog",
    "verbose_line",
]

RUN_STARTED = "run.started"
RUN_STOPPING = "run.stopping"
RUN_ENDED = "run.ended"
LISTING_DONE = "listing.done"
ATTEMPT = "api.attempt"
RETRY_SCHEDULED = "job.retry_scheduled"
JOB_ENDED = "job.ended"


class _Stamp:
    """``rfc3339(time.time())``, with the date and time of day formatted once per second.

    strftime was a tenth of an event's cost; events come many a second.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        micro = round((now - second) * 1e6)  # rounded as datetime.fromtimestamp rounds
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            # The one time format of every file a run writes, up to its fraction.
            self._second, self._prefix = second, rfc3339(second)[:-7]
        return f"{self._prefix}{micro:06d}Z"


_stamp = _Stamp()
_encode = compact_encoder(default=repr)


def _render(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """The last processor: stamp the event and encode it as one JSON line.

    One processor instead of a time stamper and structlog's ``JSONRenderer``: an event is
    logged for every request, and each processor in the chain is a call and a dict pass.
    """
    event["ts"] = _stamp(time.time())
    return _encode(event)


class _BufferedLineWriter:
    """The logger structlog wraps: appends each rendered line to a buffered text file."""

    def __init__(self, stream: TextIO) -> None:
        self._write = stream.write

    def msg(self, message: str) -> None:
        self._write(message + "\n")

    info = warning = error = debug = msg


#: events ``--verbose`` also tells on stderr, one line each
_ECHOED = frozenset({"job.retry_scheduled", "job.ended", "run.stopping"})


def verbose_line(event: Mapping[str, Any]) -> str:
    """One ``--verbose`` line for an event: its name, then its fields (API text escaped, cut)."""
    fields = " ".join(f"{k}={_shown(v)}" for k, v in event.items() if k not in ("event", "ts") and v is not None)
    return f"{event.get('event')} {fields}".rstrip()


def _shown(value: Any) -> str:
    """A field for a terminal: text from the API with control characters escaped, cut at 120."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 120 else text[:120] + "…"


def _echo(echo: Callable[[str], None]) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    def processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.get("event") in _ECHOED:
            echo(verbose_line(event))
        return event

    return processor


class EventLog:
    """A structlog logger that writes one JSON object a line to ``stream``.

    Args:
        stream: an open, buffered text file.
        echo: ``--verbose``: told one line for each retry, job that did not simply succeed, and
            stop of the run.
    """

    def __init__(self, stream: TextIO, *, echo: Callable[[str], None] | None = None) -> None:
        self._stream = stream
        # --verbose's echo reads the event before it is rendered (its lines leave out the time).
        processors: list[Any] = [_echo(echo), _render] if echo is not None else [_render]
        # bind() once: the lazy proxy wrap_logger returns would rebuild the logger on every call.
        self.log = structlog.wrap_logger(
            _BufferedLineWriter(stream),
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        ).bind()

    def flush(self) -> None:
        """Push buffered events to the file (after :meth:`close`: nothing)."""
        if not self._stream.closed:
            self._stream.flush()

    def close(self) -> None:
        """Flush and close the file (again: nothing)."""
        if not self._stream.closed:
            self._stream.flush()
            self._stream.close()
