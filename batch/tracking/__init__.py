"""Waiting for many states and sending many ids, for all jobs together.

A run that stops, images and starts thousands of instances must wait for many instance and
image states. Doing it per job would cost calls (and timers) per job; this shares them:

* :class:`StatePoller` (:mod:`.poller`): one loop polls every awaited instance and image,
  100 ids a call, once per interval, and delivers a :class:`Resolution` for each wait that ends;
  what a state or a failed look-up means is decided by the pure functions of :mod:`.states`.
"""

from __future__ import annotations

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
    PollStep,
    Resolution,
    after_poll_error,
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
    "Kind",
    "Outcome",
    "PollStep",
    "Resolution",
    "StatePoller",
    "after_poll_error",
    "judge",
    "state_outcome",
]
