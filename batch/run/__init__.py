"""One batch run: set-up and resume glue, the worker loop, the tally and the summary.

* :mod:`.engine`: :class:`Run`, set-up, the pool's companions (poller, batchers, signals), the end;
* :mod:`.workers`: the worker loop, the only code that hands jobs out and takes them back;
* :mod:`.resume`: each job back at its step from the journal's records;
* :mod:`.listing`, :mod:`.settle`, :mod:`.tally`, :mod:`.progress`.
"""

from __future__ import annotations

from .engine import Run
from .progress import Progress, RunOutcome

__all__ = ["Progress", "Run", "RunOutcome"]
