"""``--halt`` and ``--canary``: stop starting jobs when something is systematically wrong.

GNU parallel's ``--halt soon,fail=N`` is the model: a nightly run that fails its first twenty
jobs with the same error should not go on to fail the other nine thousand (and stop nine
thousand instances on the way). Both rules are pure: they look at counts and answer whether the
run halts, and why. The run drains as for a signal (the restart guarantee holds) and exits 4.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["DEFAULT_HALT_MIN", "HaltRule", "canary_verdict", "halt_verdict", "parse_halt"]

#: jobs that must have ended before a percentage rule is looked at: two failures of the first
#: three jobs say little about a fleet
DEFAULT_HALT_MIN = 20

_RULE = re.compile(r"fail=(?P<count>\d+)(?P<pct>%)?")


@dataclass(frozen=True, slots=True)
class HaltRule:
    """A parsed ``--halt`` value.

    Attributes:
        count: halt when this many jobs failed (``fail=N``), or ``None``.
        percent: halt when this share of ended jobs failed (``fail=P%``), or ``None``.
    """

    count: int | None = None
    percent: float | None = None

    def text(self) -> str:
        """The rule as the flag spells it."""
        return f"fail={self.count}" if self.count is not None else f"fail={self.percent:g}%"


def parse_halt(text: str) -> HaltRule:
    """Parse ``--halt``: ``fail=N`` (N >= 1) or ``fail=P%`` (0 < P <= 100).

    Raises:
        UsageError: anything else, with the accepted forms.
    """
    raw = text.strip()
    found = _RULE.fullmatch(raw)
    if found is None:
        msg = f"--halt {raw!r} must be fail=N (a number of failed jobs) or fail=P% (a share of ended jobs)"
        raise UsageError(msg)
    value = int(found["count"])
    if found["pct"]:
        if not 0 < value <= 100:
            msg = f"--halt {raw!r}: the percentage must be between 1 and 100"
            raise UsageError(msg)
        return HaltRule(percent=float(value))
    if value < 1:
        msg = f"--halt {raw!r}: the number of failed jobs must be at least 1"
        raise UsageError(msg)
    return HaltRule(count=value)


def halt_verdict(rule: HaltRule | None, *, ended: int, failed: int, halt_min: int = DEFAULT_HALT_MIN) -> str | None:
    """Why the run halts now, or ``None`` to go on.

    Args:
        rule: the ``--halt`` rule (``None``: never halt).
        ended: jobs ended so far in the run (every final status).
        failed: of them, jobs that failed.
        halt_min: jobs that must have ended before a percentage is looked at.
    """
    if rule is None or failed <= 0:
        return None
    if rule.count is not None:
        if failed >= rule.count:
            return f"--halt {rule.text()}: {failed} jobs failed"
        return None
    assert rule.percent is not None
    if ended < max(1, halt_min):
        return None
    share = 100.0 * failed / ended
    # compare in whole hundredths so that 1 of 5 is 20%, not 19.999...%
    if math.floor(share * 100 + 0.5) >= math.floor(rule.percent * 100 + 0.5):
        return f"--halt {rule.text()}: {failed} of {ended} ended jobs failed ({share:.0f}%)"
    return None


def canary_verdict(*, canaries: int, ended: int, failed: int) -> str | None:
    """Why the run halts after its canary jobs, or ``None``.

    Args:
        canaries: ``--canary N`` (0: no canary).
        ended: canary jobs ended so far.
        failed: of them, jobs that failed.
    """
    if canaries <= 0 or failed <= 0:
        return None
    counts = f"{failed} failed of {ended} ended so far"
    return f"--canary {canaries}: a canary job failed ({counts}); the rest were not started"
