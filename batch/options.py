"""The knobs of a run, how they are kept in ``run.json``, and how a resume combines them.

A run keeps its effective options in its run directory, so that ``--resume`` continues the run
as it was started (``--wait``, ``--rate``, ...) unless a flag is given again. Options that decide
what an image *is* (its name template, the job list's format) can never change on resume.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import RunDirectoryError, UsageError
from .halt import parse_halt
from .naming import DEFAULT_NAME_TEMPLATE
from .ownership import DEFAULT_POLICY, policy_problem

__all__ = ["IDENTITY_OPTIONS", "MIN_RATE", "RunOptions", "flag_name", "parse_max_stopped", "resume_options"]

#: Lowest ``--rate`` accepted: below it a run would, in practice, never send anything.
MIN_RATE = 0.01
#: Options a resumed run may not change: they decide the image names the run asks for, and the
#: policy its images are tagged with (and whose images ``--keep`` prunes).
IDENTITY_OPTIONS = frozenset({"name_template", "policy"})
#: Options a resume never takes from the command line: the copy keeps the format it was read in
#: (``--format`` on a resume names the format of the list given to compare with the copy).
_KEPT_OPTIONS = frozenset({"fmt"})
#: Options that describe one process, not the run: never stored, never carried over.
_PER_PROCESS = frozenset({"resume"})
_FLAGS = {"total_timeout": "--timeout", "fmt": "--format", "max_age_days": "--max-age"}


def flag_name(option: str) -> str:
    """The command-line flag of a :class:`RunOptions` field (``busy_timeout`` -> ``--busy-timeout``)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Knobs of a run (the CLI flags)."""

    concurrency: int = 8
    rate: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    busy_timeout: float = 1800.0
    max_attempts: int = 8
    grace: float = 30.0
    connect_timeout: float = 10.0
    total_timeout: float = 60.0
    name_template: str = DEFAULT_NAME_TEMPLATE
    fmt: str | None = None
    resume: bool = False
    seed: int | None = None
    wait: bool = False
    poll_interval: float = 10.0
    wait_timeout: float = 3600.0
    #: seconds between a CreateImage whose answer was lost and the look-up by name that decides
    #: whether to send it again: an API may list a new image late, and a look-up sent too soon
    #: would miss it and make a second image
    lookup_delay: float = 10.0
    #: stop RUNNING instances, image them, start them again
    stop_running: bool = False
    #: with stop_running: do not start them again
    leave_stopped: bool = False
    #: with stop_running: force the shutdown from the start
    force_stop: bool = False
    #: seconds a graceful stop may take before a forced one
    stop_timeout: float = 300.0
    #: seconds an instance may take to be RUNNING again after StartInstances
    start_timeout: float = 600.0
    #: most instances stopped by this run and not yet RUNNING again: ``N`` or ``N%`` of the list
    max_stopped: str = "10%"
    #: most of them in one job-list ``group`` (None: no per-group cap)
    max_stopped_per_group: int | None = None
    #: ``--halt fail=N`` / ``fail=P%``: stop starting jobs when this many fail (None: never)
    halt: str | None = None
    #: jobs that must have ended before a ``--halt`` percentage is looked at
    halt_min: int = 20
    #: ``--canary N``: the first N jobs run before any other; one failing halts the run
    canary: int = 0
    #: the ``imagebatch-policy`` tag of every image the run makes (and whose images --keep prunes)
    policy: str = DEFAULT_POLICY
    #: ``--keep N``: once a job's image is AVAILABLE, delete its instance's older images of the
    #: policy beyond the newest N AVAILABLE (None: no retention; implies waiting for the image)
    keep: int | None = None
    #: with keep: AVAILABLE images older than this many days go too (never the newest)
    max_age_days: float | None = None
    #: with keep: FAILED and UNAVAILABLE images of the policy go too
    prune_failed: bool = False

    def check(self, *, combined: bool = True) -> None:
        """Raise :class:`UsageError` for values no run can use.

        Args:
            combined: also check options against each other (off for the flags of a resume,
                which are combined with the run's own options first).
        """
        checks = [
            (self.concurrency >= 1, "--concurrency must be at least 1"),
            (self.concurrency <= 1000, "--concurrency must be at most 1000"),
            (
                math.isfinite(self.rate) and self.rate >= MIN_RATE,
                f"--rate must be at least {MIN_RATE:g} requests a second (one every {1 / MIN_RATE:g} s)",
            ),
            (self.backoff_base > 0, "--backoff-base must be positive"),
            (self.backoff_cap >= self.backoff_base, "--backoff-cap must be at least --backoff-base"),
            (self.busy_timeout >= 0, "--busy-timeout must not be negative"),
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
            (self.grace >= 0, "--grace must not be negative"),
            (self.connect_timeout > 0 and self.total_timeout > 0, "timeouts must be positive"),
            (self.poll_interval > 0, "--poll-interval must be positive"),
            (self.wait_timeout > 0, "--wait-timeout must be positive"),
            (0 <= self.lookup_delay <= 3600, "--lookup-delay must be between 0 and 3600 seconds"),
            (self.stop_timeout > 0 and self.start_timeout > 0, "--stop-timeout and --start-timeout must be positive"),
            (
                self.max_stopped_per_group is None or self.max_stopped_per_group >= 1,
                "--max-stopped-per-group must be at least 1",
            ),
            (
                not combined or not (self.leave_stopped or self.force_stop) or self.stop_running,
                "--leave-stopped and --force-stop go with --stop-running",
            ),
            (
                not combined or self.max_stopped_per_group is None or self.stop_running,
                "--max-stopped-per-group goes with --stop-running",
            ),
            (self.halt_min >= 0, "--halt-min must not be negative"),
            (self.canary >= 0, "--canary must not be negative"),
            (
                self.keep is None or self.keep >= 1,
                "--keep must be at least 1: the newest AVAILABLE image is never deleted",
            ),
            (
                self.max_age_days is None or (math.isfinite(self.max_age_days) and self.max_age_days > 0),
                "--max-age must be a positive number of days",
            ),
            (
                not combined or self.keep is not None or (self.max_age_days is None and not self.prune_failed),
                "--max-age and --prune-failed go with --keep",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if (problem := policy_problem(self.policy)) is not None:
            raise UsageError(problem)
        parse_max_stopped(self.max_stopped, 1)
        if self.halt is not None:
            parse_halt(self.halt)

    def to_record(self) -> dict[str, Any]:
        """The options as stored in ``run.json`` (no per-process option, never a secret)."""
        return {k: v for k, v in asdict(self).items() if k not in _PER_PROCESS}

    def non_default(self) -> frozenset[str]:
        """Names of the fields that differ from the defaults."""
        default = RunOptions()
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name))


def resume_options(
    stored: Mapping[str, Any], given: RunOptions, explicit: Collection[str]
) -> tuple[RunOptions, list[str]]:
    """Combine the options a run was started with and the flags given to its resume.

    Args:
        stored: ``run.json``'s ``options`` (may lack fields: runs of older versions).
        given: the options of this process.
        explicit: names of the fields given on this command line; the others come from ``stored``.

    Returns:
        The effective options, and one line per option this resume changes
        (``"--rate 20 (was 10)"``).

    Raises:
        RunDirectoryError: an identity option (name template, format) differs from the run's.
    """
    known = {f.name for f in fields(RunOptions)} - _PER_PROCESS
    effective: dict[str, Any] = {}
    changed: list[str] = []
    for name in sorted(known):
        value = getattr(given, name)
        if name not in stored:
            effective[name] = value
            continue
        before = stored[name]
        _check_stored(name, before, getattr(RunOptions(), name))
        if name not in explicit or name in _KEPT_OPTIONS:
            effective[name] = before
            continue
        effective[name] = value
        if value != before:
            if name in IDENTITY_OPTIONS:
                kept = "its policy (its images' tag)" if name == "policy" else "its image names"
                msg = (
                    f"{flag_name(name)} {value!r} differs from the run's {before!r}; a resumed run keeps "
                    f"{kept} (start a new run with a new --out to change it)"
                )
                raise RunDirectoryError(msg)
            changed.append(f"{flag_name(name)} {_show(value)} (was {_show(before)})")
    return replace(given, **effective), changed


def _check_stored(name: str, value: Any, default: Any) -> None:
    """A stored value must have the field's kind (run.json may have been edited by hand)."""
    if default is None or value is None:
        ok = value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default)) and not isinstance(value, bool)
    if not ok:
        msg = f"run.json: option {name!r} holds {value!r}, which this version cannot use"
        raise RunDirectoryError(msg)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_max_stopped(text: str, jobs: int) -> int:
    """``--max-stopped``: ``N`` instances, or ``N%`` of the job list (at least 1).

    Args:
        text: the flag's value.
        jobs: jobs in the list (for a percentage).

    Raises:
        UsageError: for anything but a whole number >= 1 or a percentage in (0, 100].
    """
    raw = text.strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if not (math.isfinite(share) and 0 < share <= 100):
                raise ValueError(raw)
            return max(1, math.floor(jobs * share / 100))
        count = int(raw)
    except ValueError:
        msg = f"--max-stopped {raw!r} must be a whole number (at least 1) or a percentage like 10%"
        raise UsageError(msg) from None
    if count < 1:
        msg = f"--max-stopped {raw!r} must be at least 1"
        raise UsageError(msg)
    return count
