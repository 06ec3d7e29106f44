"""Build a fake fleet from a job list (``--fleet``) or a count (``--instances``)."""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import UsageError
from ..sources import JobList
from .state import FakeInstance

__all__ = ["fleet_from_count", "fleet_from_job_list"]

_TRUE = {"1", "true", "yes", "y"}


def fleet_from_job_list(path: Path) -> list[FakeInstance]:
    """Instances named by a job list: STOPPED, non-GPU and idle unless its fake-only columns say
    otherwise (``fakeGpu``, ``fakeBusySeconds``, ``fakeStatus``, ``fakeImageFails``;
    ``fakeStatus=MISSING`` leaves the instance out, so CreateImage answers not-found).
    """
    jobs = JobList(path)
    jobs.check()
    fleet = []
    for job in jobs:
        status = job.fake.get("fakeStatus", "STOPPED").upper()
        if status == "MISSING":
            continue
        try:
            busy = float(job.fake.get("fakeBusySeconds", "0"))
        except ValueError as exc:
            msg = f"{path}:{job.line}: field 'fakeBusySeconds': not a number"
            raise UsageError(msg) from exc
        fleet.append(
            FakeInstance(
                job.instance_id,
                status=status,
                gpu=job.fake.get("fakeGpu", "").lower() in _TRUE,
                busy_until=busy,
                image_fails=job.fake.get("fakeImageFails", "").lower() in _TRUE,
            )
        )
    return fleet


def fleet_from_count(
    count: int, *, busy_fraction: float = 0.0, busy_max_seconds: float = 0.0, gpu_fraction: float = 0.0, seed: int = 0
) -> list[FakeInstance]:
    """``count`` STOPPED instances with ids ``1000000000000000001``...; a seeded share of them
    busy for a random time up to ``busy_max_seconds``, or GPU.

    ``imagebatch fake-server --write-jobs`` writes them as a job list; the benchmarks use the same ids.
    """
    rng = random.Random(seed)  # noqa: S311 - test fixture dice
    fleet = []
    for n in range(1, count + 1):
        busy = rng.uniform(0, busy_max_seconds) if rng.random() < busy_fraction else 0.0
        gpu = rng.random() < gpu_fraction
        fleet.append(FakeInstance(instance_id(n), gpu=gpu, busy_until=busy))
    return fleet


def instance_id(n: int) -> str:
    """The id of the n-th generated instance."""
    return str(1_000_000_000_000_000_000 + n)
