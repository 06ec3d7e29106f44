"""Waiting for many states and sending many ids, for all jobs together.

A run that stops, images and starts thousands of instances must wait for many instance and
image states and send StopInstances, StartInstances and DeleteImages for many jobs. Doing
either per job would cost calls (and timers) per job; these two pieces share them:

* :class:`StatePoller` (:mod:`.poller`): one loop polls every awaited instance and image,
  100 ids a call, once per interval, and delivers a :class:`Resolution` for each wait that ends;
  what a state or a failed look-up means is decided by the pure functions of :mod:`.states`.
* :class:`Batcher` (:mod:`.batcher`): collects ids for a moment, sends them 100 a call, and
  delivers a :class:`BatchResult` per id.
"""

from __future__ import annotations

from .batcher import Batcher, BatchResult
from .poller import StatePoller
from .states import (
    FAILED_IMAGE_STATES,
    FAILING_INSTANCE_STATES,
    MISSING_POLLS,
    POLL_FAILURES,
    REACHED_IMAGE_STATES,
    Awaited,
    Kind,
    Outcome,
    Resolution,
    judge,
    state_outcome,
)

__all__ = [
    "FAILED_IMAGE_STATES",
    "FAILING_INSTANCE_STATES",
    "MISSING_POLLS",
    "POLL_FAILURES",
    "REACHED_IMAGE_STATES",
    "Awaited",
    "BatchResult",
    "Batcher",
    "Kind",
    "Outcome",
    "Resolution",
    "StatePoller",
    "judge",
    "state_outcome",
]
