"""A job as a sequence of steps: check -> stop -> create -> wait -> start -> prune.

Each step is a small unit that returns an :data:`~.outcome.Outcome`; only the run's worker
loop (:mod:`batch.run.workers`) turns outcomes into dispatcher calls.

* :mod:`.create`: the name rule (the first decision) and CreateImage with its look-ups by name;
* :mod:`.power`: ``--stop-running``'s check, stop and start steps (batched, capped);
* :mod:`.wait`: until the image is done (``--wait``, or before a stopped instance's start);
* :mod:`.prune`: ``--keep``'s deletions once the image is AVAILABLE (after the start, if any);
* :mod:`.job` (a job's state), :mod:`.context` (what steps share), :mod:`.outcome`.

A slot for what comes next: a halt check before a job starts (issue 11) goes at the top of
:func:`.create.first_look`.
"""

from __future__ import annotations

from .outcome import Await, End, Join, Next, Outcome, Retry, Step, StopRun

__all__ = ["Await", "End", "Join", "Next", "Outcome", "Retry", "Step", "StopRun"]
