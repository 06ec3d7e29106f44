"""``--halt`` and ``--canary`` in a run: count the jobs as they end and say when the run halts.

The rules are :mod:`batch.halt`'s pure functions; this holds the counts. The canaries are the
first ``--canary N`` jobs this process starts (on a resume: the first N not yet ended); the rest
of the list is held back until every canary has ended, and is never started if one fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..halt import HaltRule, canary_verdict, halt_verdict, parse_halt
from ..models import Status
from ..options import RunOptions
from ..pipeline.job import JobState
from ..scheduling import Dispatcher

__all__ = ["HaltWatch", "Halting"]

#: statuses that count as a failed job for --halt and --canary (``unknown``: the run could not
#: tell, which a nightly run should not shrug off either)
_FAILED = frozenset({Status.FAILED, Status.UNKNOWN})


class HaltWatch:
    """Counts ended jobs against ``--halt`` and the canaries.

    Args:
        rule: the ``--halt`` rule, or ``None``.
        halt_min: jobs that must have ended before a percentage rule is looked at.
        ended: jobs already ended (earlier processes of the run).
        failed: of them, failed ones.
    """

    def __init__(self, rule: HaltRule | None, *, halt_min: int, ended: int = 0, failed: int = 0) -> None:
        self.rule = rule
        self.halt_min = halt_min
        self.ended = ended
        self.failed = failed
        self._canaries: set[str] = set()
        self._canary_count = 0
        self._canary_ended = 0
        self._canary_failed = 0
        #: why the run halted, once it did
        self.reason: str | None = None

    def canary(self, instance_id: str) -> None:
        """One more canary job, by its instance id."""
        self._canaries.add(instance_id)
        self._canary_count += 1

    @property
    def canaries_pending(self) -> bool:
        """Some canary has not ended yet."""
        return bool(self._canaries)

    def on_end(self, instance_id: str, status: Status) -> str | None:
        """Count one ended job; return why the run halts now (once), or ``None``.

        Args:
            instance_id: the job's instance.
            status: how it ended (``interrupted`` is not counted: the run stopped it).
        """
        if status is Status.INTERRUPTED:
            return None
        failed = status in _FAILED
        self.ended += 1
        self.failed += failed
        verdict = None
        if instance_id in self._canaries:
            self._canaries.discard(instance_id)
            self._canary_ended += 1
            self._canary_failed += failed
            verdict = canary_verdict(canaries=self._canary_count, ended=self._canary_ended, failed=self._canary_failed)
        if verdict is None:
            verdict = halt_verdict(self.rule, ended=self.ended, failed=self.failed, halt_min=self.halt_min)
        if verdict is not None and self.reason is None:
            self.reason = verdict
            return verdict
        return None


class Halting:
    """Wires a :class:`HaltWatch` into a run: the canaries first, the rest held, and a halt when a
    rule says so.

    Args:
        watch: the counts.
        canaries: ``--canary N`` (0: none).
        halt: called once with the reason when the run halts.
    """

    def __init__(self, watch: HaltWatch, canaries: int, halt: Callable[[str], None]) -> None:
        self.watch = watch
        self._count = canaries
        self._halt = halt
        self._dispatcher: Dispatcher[Any] | None = None
        self._canaries_read = canaries == 0

    @classmethod
    def of(cls, options: RunOptions, by_status: Mapping[str, int], halt: Callable[[str], None]) -> Halting:
        """From the run's options and the jobs earlier processes ended.

        Args:
            options: the run's options (``halt``, ``halt_min``, ``canary``).
            by_status: jobs ended so far, by status.
            halt: called with the reason when the run halts.
        """
        watch = HaltWatch(
            parse_halt(options.halt) if options.halt is not None else None,
            halt_min=options.halt_min,
            ended=sum(n for k, n in by_status.items() if k != Status.INTERRUPTED.value),
            failed=by_status.get(Status.FAILED.value, 0) + by_status.get(Status.UNKNOWN.value, 0),
        )
        return cls(watch, options.canary, halt)

    def canaries(self, source: Iterator[JobState]) -> Iterator[JobState]:
        """What the dispatcher reads first: the canaries (or, with none, the whole list)."""
        if not self._count:
            yield from source
            return
        for st in itertools.islice(source, self._count):
            self.watch.canary(st.job.instance_id)
            yield st
        self._canaries_read = True
        self.job_ended(None, None)  # every canary may have ended already

    def attach(self, dispatcher: Dispatcher[Any], rest: Iterator[JobState]) -> None:
        """Hold the rest of the list back until the canaries have ended; halt at once when the
        jobs earlier processes ended already meet ``--halt`` (a resume starts nothing then)."""
        self._dispatcher = dispatcher
        if self._count:
            dispatcher.hold(rest)
        w = self.watch
        reason = halt_verdict(w.rule, ended=w.ended, failed=w.failed, halt_min=w.halt_min)
        if reason is not None:
            w.reason = reason
            self._halt(reason)

    def job_ended(self, st: JobState | None, status: Status | None) -> None:
        """A job's result was written: halt if a rule says so, or let the rest in once every
        canary has ended."""
        watch = self.watch
        if st is not None and status is not None:
            reason = watch.on_end(st.job.instance_id, status)
            if reason is not None:
                self._halt(reason)
                return
        if self._count and self._canaries_read and not watch.canaries_pending and watch.reason is None:
            assert self._dispatcher is not None
            self._dispatcher.release()
