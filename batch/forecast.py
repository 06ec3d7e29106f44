"""How many API calls a run will make and how long it will take: the arithmetic of ``plan``.

Pure: from what the plan found (jobs to image, instances to stop, names that already exist) and
the run's knobs, the predicted calls by action and the wall time as the largest of three bounds,
the same bounds ``benchmarks/lifecycle.py`` measures the tool against:

* rate bound: every call takes one token of ``--rate``;
* concurrency bound: CreateImage calls in flight at most ``--concurrency``, each taking the
  latency the plan's own calls saw;
* cap bound: instances to stop go in waves of ``--max-stopped``, each wave taking a stop, an
  image, a boot, and a poll interval for each of its waits.

Stop, image and boot durations are not knowable in advance; the plan states the ones it assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Durations", "Forecast", "PlanCounts", "forecast"]

#: ids a batched call (DescribeInstancesStatus, StopInstances, ...) takes at most
_IDS_PER_CALL = 100
#: images a DescribeCustomImages page holds
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Durations:
    """Assumed seconds for the power and image steps (the plan prints them)."""

    stop: float = 60.0
    image: float = 300.0
    boot: float = 60.0


@dataclass(frozen=True, slots=True)
class PlanCounts:
    """What the plan found.

    Attributes:
        jobs: jobs in the list.
        to_create: jobs that will send CreateImage (not skipped by an existing name).
        to_stop: RUNNING instances the run will stop (``--stop-running``).
        restart: of them, instances the run will start again (0 with ``--leave-stopped``).
        existing_images: images the run's listing will page through.
        to_delete: images retention would delete.
        wait: the run waits for its images (``--wait`` or ``--keep``).
    """

    jobs: int
    to_create: int
    to_stop: int = 0
    restart: int = 0
    existing_images: int = 0
    to_delete: int = 0
    wait: bool = False


@dataclass(frozen=True, slots=True)
class Forecast:
    """Predicted calls (by action) and wall time (the largest bound, and which one it is)."""

    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bound: str = "rate"
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        """All calls the run is predicted to make."""
        return sum(self.calls.values())


def _batches(count: int, size: int = _IDS_PER_CALL) -> int:
    return math.ceil(count / size) if count > 0 else 0


def forecast(
    counts: PlanCounts,
    *,
    rate: float,
    concurrency: int,
    latency: float,
    max_stopped: int,
    poll_interval: float,
    durations: Durations = Durations(),
) -> Forecast:
    """The calls and wall time of a run (see the module's text for the model).

    Args:
        counts: what the plan found.
        rate: ``--rate`` (requests a second).
        concurrency: ``--concurrency``.
        latency: seconds a call took during the plan (median).
        max_stopped: ``--max-stopped`` resolved to a number of instances.
        poll_interval: ``--poll-interval``.
        durations: assumed stop, image and boot seconds.
    """
    calls: dict[str, int] = {}
    listing_pages = max(1, math.ceil(counts.existing_images / _PAGE))
    calls["DescribeCustomImages"] = listing_pages
    calls["CreateImage"] = counts.to_create
    cap = max(1, max_stopped)
    waves = math.ceil(counts.to_stop / cap) if counts.to_stop else 0
    per_wave = min(cap, counts.to_stop) if counts.to_stop else 0
    if counts.to_stop:
        # the check step looks every instance up once, 100 a call
        calls["DescribeInstancesStatus"] = _batches(counts.jobs)
        calls["StopInstances"] = waves * _batches(per_wave)
        # each wave polls its instances while they stop and boot, and its images while they are made
        stop_polls = math.ceil(durations.stop / poll_interval)
        boot_polls = math.ceil(durations.boot / poll_interval) if counts.restart else 0
        image_polls = math.ceil(durations.image / poll_interval)
        calls["DescribeInstancesStatus"] += waves * _batches(per_wave) * (stop_polls + boot_polls + image_polls)
        calls["DescribeCustomImages"] += waves * _batches(per_wave) * image_polls
        if counts.restart:
            calls["StartInstances"] = waves * _batches(per_wave)
    elif counts.wait and counts.to_create:
        calls["DescribeCustomImages"] += _batches(counts.to_create) * math.ceil(durations.image / poll_interval)
    if counts.to_delete:
        calls["DeleteImages"] = _batches(counts.to_delete)
    calls = {k: v for k, v in calls.items() if v}
    total = sum(calls.values())
    bounds = {
        "rate": total / rate,
        "concurrency": counts.to_create * latency / max(1, concurrency),
        "cap": waves * (durations.stop + durations.image + durations.boot + 2 * poll_interval),
    }
    if counts.wait and not counts.to_stop and counts.to_create:
        bounds["cap"] = durations.image + poll_interval
    bound = max(bounds, key=lambda k: bounds[k])
    return Forecast(calls=calls, seconds=bounds[bound], bound=bound, bounds=bounds)
