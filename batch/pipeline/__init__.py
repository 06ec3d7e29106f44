"""A job as a sequence of steps: check -> stop -> create -> wait -> start.

Each step is a small unit that returns an :data:`~.outcome.Outcome`; only the run's worker
loop (:mod:`batch.run.workers`) turns outcomes into dispatcher calls.

* :mod:`.create`: the name rule (the first decision) and CreateImage with its look-ups by name;
* :mod:`.power`: ``--stop-running``'s check, stop and start steps (batched, capped);
* :mod:`.wait`: until the image is done (``--wait``, or before a stopped instance's start);
* :mod:`.job` (a job's state), :mod:`.context` (what steps share), :mod:`.outcome`.

Slots for what comes next: a halt check before a job starts (issue 11) goes at the top of
:func:`.create.first_look`; the ``prune`` step (issue 10) after the image is AVAILABLE, in
:func:`.wait.image_done` (and :meth:`.power.Lifecycle._after_image` for a cycled instance).
"""

from __future__ import annotations

from .outcome import Await, End, Join, Next, Outcome, Retry, Step, StopRun

__all__ = ["Await", "End", "Join", "Next", "Outcome", "Retry", "Step", "StopRun"]
