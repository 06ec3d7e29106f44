"""Every API request passes here: the rate limit before it, the counters and the event after it.

The client calls :meth:`CallWatch.gate` before it sends and :meth:`CallWatch.observe` once for
every request it sent; a request made inside a job's step counts as that job's attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..client import RequestRecord
from ..errors import ApiError, FatalRunError
from ..events import ATTEMPT
from ..pipeline.context import CURRENT_JOB
from ..scheduling import RateMeter
from .progress import Phase
from .tally import Tally

__all__ = ["CallWatch"]


class CallWatch:
    """The run's gate and observer of API requests.

    Args:
        meter: the rate limit.
        phase: what progress shows (requests on the wire, listing pages).
        tally: the call counters.
        log: the event log's logger.
        concurrency: ``--concurrency`` (how many unanswered requests in a row mean an outage).
        stop_run: stops the run on an outage.
    """

    def __init__(
        self,
        meter: RateMeter,
        phase: Phase,
        tally: Tally,
        log: Any,
        *,
        concurrency: int,
        stop_run: Callable[[ApiError], None],
    ) -> None:
        self.meter = meter
        self.phase = phase
        self.tally = tally
        self.log = log
        self.concurrency = concurrency
        self.stop_run = stop_run
        #: requests in a row that got no usable answer (see _watch_outage)
        self._unanswered = 0

    async def gate(self, _action: str) -> None:
        """Wait for the rate limit before a request is sent."""
        # Real seconds: the rate limiter waits on the real clock, whatever the run's clock says.
        started = time.monotonic()
        await self.meter.acquire()
        # Counted down in observe, which the client calls once for every request it sends.
        self.phase.requests_in_flight += 1
        st = CURRENT_JOB.get()
        if st is not None:
            st.limiter_wait += time.monotonic() - started

    def observe(self, record: RequestRecord) -> None:
        """Count a request that was sent, and log it.

        Args:
            record: what the client saw of it.
        """
        self.phase.requests_in_flight -= 1
        self._watch_outage(record)
        if self.phase.name == "listing":
            self.phase.pages += 1
        self.tally.calls[record.action] += 1
        self.tally.codes[record.code or "OK"] += 1
        self.tally.requests[(record.action, record.code or "OK")] += 1
        self.tally.throttled += record.status == 429
        st = CURRENT_JOB.get()
        job: dict[str, Any] = {}
        if st is not None:
            st.attempts += 1
            if record.request_id:
                st.request_ids.append(record.request_id)
            job = {"instanceId": st.job.instance_id, "attempt": st.attempts, "limiterWaitSeconds": st.limiter_wait}
            st.limiter_wait = 0.0
        self.log.info(
            ATTEMPT,
            action=record.action,
            status=record.status,
            code=record.code,
            requestId=record.request_id,
            apiSeconds=record.elapsed,
            **job,
        )

    def _watch_outage(self, record: RequestRecord) -> None:
        """Many requests in a row without a usable answer (no connection, 5xx) mean the API, or
        the way to it, is down: stop the run (exit 3, jobs ``interrupted`` for --resume) rather
        than fail every job for good one by one."""
        if record.status is not None and record.status < 500:
            self._unanswered = 0
            return
        self._unanswered += 1
        if self._unanswered >= max(24, 3 * self.concurrency):
            self.stop_run(
                FatalRunError(
                    "API_UNREACHABLE",
                    f"{self._unanswered} requests in a row got no usable answer (the last: {record.code or 'none'}, "
                    f"HTTP {record.status if record.status is not None else 'none'}); the API or the way to it "
                    "is down",
                    status=record.status,
                    request_id=record.request_id,
                    action=record.action,
                )
            )
