"""What the steps share: the run's client, journal, options, clocks and a few run-wide flags.

The engine (:mod:`batch.run.engine`) makes one :class:`Context` per process; the steps read it
and return outcomes, never touching the dispatcher.
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..client import ZecClient
from ..clock import Clock
from ..errors import ApiError
from ..journal import JournalWriter
from ..options import RunOptions
from ..policy import RetryOptions
from ..power import PowerLedger
from ..scheduling import RateMeter
from ..tracking import StatePoller

if TYPE_CHECKING:
    from .power import Lifecycle
    from .prune import Keeper

__all__ = ["CURRENT_JOB", "Context"]

#: the job whose step is running in this task: its requests are counted as its attempts
CURRENT_JOB: contextvars.ContextVar[Any] = contextvars.ContextVar("imagebatch_job", default=None)


@dataclass(eq=False)
class Context:
    """The run as the steps see it.

    Args:
        options: the run's knobs.
        clock: monotonic and wall clocks.
        rng: the run's random source (jitter).
        log: the event log's logger.
        writer: the journal.
        client: the API client.
        meter: the rate limit and throttle.
        poller: the one poller of instance and image states.
        stop_run: stops the run on a fatal error (the first wins).
        stopping: whether the run is stopping (send nothing new).
    """

    options: RunOptions
    clock: Clock
    rng: random.Random
    log: Any
    writer: JournalWriter
    client: ZecClient
    meter: RateMeter
    poller: StatePoller[Any]
    stop_run: Callable[[ApiError], None]
    stopping: Callable[[], bool]
    retry: RetryOptions = field(init=False)
    #: the image names the starting listing found: name -> (image id, status)
    existing: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: ``--stop-running``: the power steps (None: a plain run)
    life: Lifecycle | None = None
    #: ``--keep``: the policy's listing and the DeleteImages batcher (None: no retention)
    keep: Keeper | None = None
    #: the run's id: every image's ``imagebatch-run`` tag (the engine sets the header's)
    run_id: str = "unknown"
    #: the instances this run stopped (in every process) and has not seen RUNNING again
    ledger: PowerLedger | None = None
    #: look-ups by name can no longer be sent (one failed fatally)
    lookups_off: bool = False
    #: the fatal error that stopped the run (the first one)
    fatal: ApiError | None = None
    #: retries scheduled (for the summary)
    retries: int = 0

    def __post_init__(self) -> None:
        self.retry = RetryOptions.of(self.options)

    def now(self) -> float:
        """Monotonic seconds."""
        return self.clock.monotonic()
