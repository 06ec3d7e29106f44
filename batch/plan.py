"""``imagebatch plan``: what a run would do, found out without changing anything.

The decisions are pure (:func:`job_verdict`) and the run's own steps make the same ones: the
create step skips a job whose name the listing found (:func:`name_taken`), and the check step
decides from the instance's state what to do with it (:func:`power_verdict`). The plan reads the
same facts the run reads first (the image listing, the instances' states, 100 a call) and
applies the same functions, so a plan cannot disagree with the run it describes.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .client import RequestRecord, ZecClient
from .forecast import Durations, Forecast, PlanCounts, forecast
from .keep import KeepBook, KeepRule, new_image_record
from .models import Job
from .ownership import ownership_tags
from .tracking.states import FAILING_INSTANCE_STATES

__all__ = [
    "LIVE_IMAGE_STATES",
    "STOP_HINT",
    "JobVerdict",
    "Plan",
    "gather_plan",
    "job_verdict",
    "name_taken",
    "power_verdict",
    "predict",
]

#: Image states that mean "an image by this name is there (or on its way)": the run skips it.
LIVE_IMAGE_STATES = frozenset({"AVAILABLE", "CREATING", "SYNCING", "PROCESSING"})
RUNNING, STOPPED = "RUNNING", "STOPPED"
STOP_HINT = "CreateImage needs a STOPPED instance; stop it first, or run with --stop-running (stop, image, start again)"

#: what a job would do
CREATE = "create"  # image the instance as it is (STOPPED; left STOPPED)
CYCLE = "stop, create, start"  # --stop-running: stop, image, start again
STOP_CREATE = "stop, create"  # --stop-running --leave-stopped
SKIP = "skip"  # an image by its name exists
WAIT = "wait, then decide"  # a transitional state: the run waits for it to settle
FAIL = "fail"
#: the actions that make an image (after which --keep prunes)
_MAKES_IMAGE = frozenset({CREATE, CYCLE, STOP_CREATE, WAIT})


@dataclass(frozen=True, slots=True)
class JobVerdict:
    """What the run would do with one job.

    Attributes:
        action: one of ``create``, ``stop, create, start``, ``stop, create``, ``skip``,
            ``wait, then decide``, ``fail``.
        code: for ``fail``, the error code the job would end with; ``None`` when the API's
            answer decides it (a plain run sends CreateImage to an instance in RECYCLE).
        reason: why, in words.
    """

    action: str
    code: str | None = None
    reason: str = ""

    @property
    def fails(self) -> bool:
        """The job would fail."""
        return self.action == FAIL


def name_taken(existing: tuple[str, str] | None) -> bool:
    """Whether an image found by the job's name makes the run skip the job.

    Args:
        existing: ``(image id, status)`` of the image the listing found by this name, or ``None``.
    """
    return existing is not None and existing[1] in LIVE_IMAGE_STATES


def power_verdict(state: str | None, *, stop_running: bool, leave_stopped: bool) -> JobVerdict:
    """What the run does with an instance in ``state`` (``None``: the API does not know it).

    Args:
        state: the instance's state (DescribeInstancesStatus), or ``None`` when not found.
        stop_running: ``--stop-running``.
        leave_stopped: ``--leave-stopped``.
    """
    if state is None:
        return JobVerdict(FAIL, "INVALID_INSTANCE_NOT_FOUND", "the API does not know this instance")
    if state in FAILING_INSTANCE_STATES:
        if not stop_running:
            # A plain run sends CreateImage and ends with the API's code, which the plan cannot
            # know (the fake answers OPERATION_FAILED_FOR_RECYCLE_RESOURCE; the real API may not).
            return JobVerdict(FAIL, None, f"CreateImage refuses an instance in {state}")
        # --stop-running: the run's check step ends the job with this code before any CreateImage
        return JobVerdict(FAIL, f"INSTANCE_{state}", f"the instance is {state}")
    if state == STOPPED:
        return JobVerdict(CREATE, reason="STOPPED: imaged and left STOPPED")
    if state == RUNNING:
        if not stop_running:
            return JobVerdict(FAIL, "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", f"RUNNING: {STOP_HINT}")
        if leave_stopped:
            return JobVerdict(STOP_CREATE, reason="RUNNING: stopped, imaged, left STOPPED (--leave-stopped)")
        return JobVerdict(CYCLE, reason="RUNNING: stopped, imaged, started again")
    return JobVerdict(WAIT, reason=f"{state}: the run waits for it to settle (busy instances are retried)")


def job_verdict(
    state: str | None, existing: tuple[str, str] | None, *, stop_running: bool, leave_stopped: bool
) -> JobVerdict:
    """What the run would do with one job: skip it by name, else what its state decides.

    Args:
        state: the instance's state, ``None`` when the API does not know it.
        existing: the image the listing found by the job's name, or ``None``.
        stop_running: ``--stop-running``.
        leave_stopped: ``--leave-stopped``.
    """
    if name_taken(existing):
        assert existing is not None
        return JobVerdict(SKIP, reason=f"an image by this name exists ({existing[1]}, {existing[0]})")
    return power_verdict(state, stop_running=stop_running, leave_stopped=leave_stopped)


@dataclass
class Plan:
    """What a plan found and predicts."""

    jobs: list[tuple[Job, str | None, JobVerdict]] = field(default_factory=list)
    images_listed: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    latency: float = 0.0
    forecast: Forecast | None = None
    deletions: list[dict[str, Any]] = field(default_factory=list)
    quota: int | None = None

    @property
    def by_action(self) -> Counter[str]:
        """Jobs by what they would do."""
        return Counter(v.action for _, _, v in self.jobs)

    @property
    def failing(self) -> list[tuple[Job, str | None, JobVerdict]]:
        """Jobs that would fail."""
        return [row for row in self.jobs if row[2].fails]

    def images_made(self) -> int:
        """Jobs predicted to send CreateImage (those that wait for a state to settle included)."""
        return sum(self.by_action[action] for action in _MAKES_IMAGE)

    def images_after(self) -> int:
        """Custom images in the account when the run has ended (every listed one, the new ones, less deletions)."""
        return self.images_listed + self.images_made() - len(self.deletions)

    def images_peak(self) -> int:
        """Most custom images at once: deletions come after each instance's new image."""
        return self.images_listed + self.images_made()

    def over_quota(self) -> bool:
        """The run would meet ``INVALID_IMAGE_QUOTA_EXCEED`` (only known with ``--quota``)."""
        return self.quota is not None and self.images_peak() > self.quota

    def to_record(self) -> dict[str, Any]:
        """The plan as one JSON document (``--output json``)."""
        f = self.forecast
        return {
            "jobs": len(self.jobs),
            "byAction": dict(self.by_action),
            "wouldFail": len(self.failing),
            "imagesListed": self.images_listed,
            "imagesAfter": self.images_after(),
            "imagesPeak": self.images_peak(),
            "quota": self.quota,
            "overQuota": self.over_quota(),
            "deletions": self.deletions,
            "planCalls": dict(self.calls),
            "latencySeconds": round(self.latency, 4),
            "predicted": None
            if f is None
            else {
                "calls": f.calls,
                "totalCalls": f.total_calls,
                "seconds": round(f.seconds, 1),
                "boundBy": f.bound,
                "bounds": {k: round(v, 1) for k, v in f.bounds.items()},
            },
            "jobList": [
                {
                    "line": job.line,
                    "instanceId": job.instance_id,
                    "imageName": job.image_name,
                    "state": state,
                    "action": v.action,
                    "code": v.code,
                    "reason": v.reason,
                }
                for job, state, v in self.jobs
            ],
        }


class _Calls:
    """Counts the plan's own calls and their latency (the observer of its client)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.elapsed: list[float] = []

    def __call__(self, record: RequestRecord) -> None:
        self.calls[record.action] += 1
        if record.status == 200:
            self.elapsed.append(record.elapsed)


async def gather_plan(
    client: ZecClient,
    jobs: Sequence[Job],
    *,
    stop_running: bool,
    leave_stopped: bool,
    calls: _Calls | None = None,
    keep: KeepRule | None = None,
) -> Plan:
    """Read what the run would read first, and decide each job as the run would.

    The first call is the image listing: bad credentials end the plan there, as they would end
    the run.

    Args:
        client: a client whose ``observer`` is ``calls`` (so the plan counts its own calls).
        jobs: the job list.
        stop_running: ``--stop-running``.
        leave_stopped: ``--leave-stopped``.
        calls: the observer the client reports to.
        keep: ``--keep`` and its policy: list the policy's images once, and say which each job's
            prune would delete (the run's own choice, :meth:`KeepBook.choose`, with the new image
            as the newest).
    """
    names = {job.image_name for job in jobs}
    existing: dict[str, tuple[str, str]] = {}
    listed = 0
    async for image in client.describe_custom_images(page_size=1000):
        listed += 1
        name, status = image.get("imageName"), image.get("imageStatus")
        # several images may share a name: a live one wins, as it does for the run
        wanted = isinstance(name, str) and name in names and isinstance(status, str)
        if wanted and (name not in existing or status in LIVE_IMAGE_STATES):
            existing[str(name)] = (str(image.get("imageId")), str(status))
    states = await client.describe_instances_status(sorted({job.instance_id for job in jobs}))
    plan = Plan(images_listed=listed)
    for job in jobs:
        state = states.get(job.instance_id)
        verdict = job_verdict(
            state, existing.get(job.image_name), stop_running=stop_running, leave_stopped=leave_stopped
        )
        plan.jobs.append((job, state, verdict))
    if keep is not None:
        plan.deletions = await _deletions(client, plan, keep)
    if calls is not None:
        plan.calls = calls.calls
        plan.latency = statistics.median(calls.elapsed) if calls.elapsed else 0.0
    return plan


async def _deletions(client: ZecClient, plan: Plan, keep: KeepRule) -> list[dict[str, Any]]:
    """What retention would delete: each job that makes an image prunes as the run would."""
    from .prune import list_policy_images  # the run's own listing of the policy

    book = KeepBook(keep, await list_policy_images(client, keep.policy))
    now = datetime.now(UTC)
    deletions: list[dict[str, Any]] = []
    for job, _state, verdict in plan.jobs:
        if verdict.action not in _MAKES_IMAGE:
            continue
        tags = ownership_tags(keep.policy, job.instance_id, now, "plan")
        choice = book.choose(job.instance_id, new_image_record("(new)", job.image_name, tags), now)
        for image_id in choice.delete:
            listed = book.listed(image_id)
            deletions.append(
                {
                    "instanceId": job.instance_id,
                    "imageId": image_id,
                    "imageName": listed.name if listed is not None else None,
                    "imageStatus": listed.status if listed is not None else None,
                }
            )
    return deletions


def predict(
    plan: Plan,
    *,
    rate: float,
    concurrency: int,
    max_stopped: int,
    poll_interval: float,
    wait: bool,
    durations: Durations,
) -> Forecast:
    """The run's calls and wall time from what the plan found (see :mod:`batch.forecast`)."""
    actions = plan.by_action
    counts = PlanCounts(
        jobs=len(plan.jobs),
        to_create=plan.images_made(),
        to_stop=actions[CYCLE] + actions[STOP_CREATE],
        restart=actions[CYCLE],
        existing_images=plan.images_listed,
        to_delete=len(plan.deletions),
        wait=wait,
    )
    return forecast(
        counts,
        rate=rate,
        concurrency=concurrency,
        latency=plan.latency,
        max_stopped=max_stopped,
        poll_interval=poll_interval,
        durations=durations,
    )


def failing_codes(rows: Iterable[tuple[Job, str | None, JobVerdict]]) -> Mapping[str, int]:
    """Jobs that would fail, by code."""
    return Counter(v.code or "?" for _, _, v in rows if v.fails)
