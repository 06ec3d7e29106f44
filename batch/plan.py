"""``imagebatch plan``: what a run would do, found out without changing anything.

The decisions are pure (:func:`job_verdict`) and the run's own steps make the same ones: the
create step skips a job whose name the listing found (:func:`name_taken`), and the check step
decides from the instance's state what to do with it (:func:`power_verdict`). The plan reads the
same facts the run reads first (the image listing, the instances' states, 100 a call) and
applies the same functions. Where CreateImage's answer decides (a GPU instance, a full quota, a
plain run's CreateImage to an instance in RECYCLE), the plan cannot know it: it names no code, or
predicts ``create``; and it does not simulate ``--halt`` or ``--canary``.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from .client import MAX_IDS_PER_CALL, RequestRecord, ZecClient
from .errors import ApiError, FatalRunError, PermanentJobError, ThrottledError
from .forecast import Durations, Forecast, PlanCounts, forecast
from .keep import KeepBook, KeepRule, new_image_record
from .models import Job
from .ownership import ownership_tags
from .policy import Attempts, Call, Retry, RetryOptions, decide, lookup_timeout
from .tracking.states import FAILING_INSTANCE_STATES

T = TypeVar("T")

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
    "read_with_retries",
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
    #: what the plan does not simulate (``--halt``, ``--canary``), one sentence each
    notes: list[str] = field(default_factory=list)

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
            "notes": self.notes,
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


async def read_with_retries(
    read: Callable[[int], Awaitable[T]],
    retry: RetryOptions,
    *,
    what: str,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """One of the plan's reads, asked again as the run asks its listing again (``Call.LISTING``).

    A read changes nothing, so asking again is safe. Fatal errors (refused credentials) and
    permanent ones end it at once; a 429 does not use up the budget of tries (the run's
    listings neither), but at most ``retry.throttled_limit`` of them are waited out.

    Args:
        read: the read; it is given the failed tries so far (a growing time-out may use it).
        retry: the budget and back-off (the run's ``--backoff-base`` / ``--backoff-cap``).
        what: the read, for the message when it gives up ("list the images").
        rng: the back-off's dice.
        sleep: how to wait.

    Raises:
        ApiError: the error that ended the tries (reworded, with the tries, when the budget ran out).
    """
    dice = rng or random.Random()  # noqa: S311 - back-off jitter, not a secret
    failures = throttled = 0
    while True:
        try:
            return await read(failures)
        except ApiError as err:
            is_throttled = isinstance(err, ThrottledError)
            throttled += is_throttled
            failures += not is_throttled
            attempts = Attempts(
                failures=failures, throttled=throttled, server_wait=err.retry_after or 0.0, jitter=dice.random()
            )
            verdict = decide(err, attempts, retry, call=Call.LISTING)
            if isinstance(err, FatalRunError | PermanentJobError):
                raise
            if not isinstance(verdict, Retry) or throttled > retry.throttled_limit:
                tries = failures + throttled
                msg = f"could not {what} after {tries} attempt{'s' * (tries != 1)}: {err.message}"
                raise type(err)(err.code, msg, status=err.status, request_id=err.request_id, action=err.action) from err
            await sleep(verdict.delay)


async def gather_plan(
    client: ZecClient,
    jobs: Sequence[Job],
    *,
    stop_running: bool,
    leave_stopped: bool,
    calls: _Calls | None = None,
    keep: KeepRule | None = None,
    retry: RetryOptions | None = None,
    total_timeout: float | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """Read what the run would read first, and decide each job as the run would.

    The first call is the image listing: bad credentials end the plan there, as they would end
    the run. Each read that fails for a reason worth retrying (throttled, 5xx, lost answer) is
    asked again as the run would (:func:`read_with_retries`): the listing whole, the states 100
    ids a call.

    Args:
        client: a client whose ``observer`` is ``calls`` (so the plan counts its own calls).
        jobs: the job list.
        stop_running: ``--stop-running``.
        leave_stopped: ``--leave-stopped``.
        calls: the observer the client reports to.
        keep: ``--keep`` and its policy: list the policy's images once, and say which each job's
            prune would delete (the run's own choice, :meth:`KeepBook.choose`, with the new image
            as the newest).
        retry: the retry budget and back-off (default: the run's defaults).
        total_timeout: ``--timeout``: the listing's tries wait longer each time, as the run's do.
        rng: the back-off's dice.
    """
    retry = retry or RetryOptions()
    dice = rng or random.Random()  # noqa: S311 - back-off jitter, not a secret
    names = {job.image_name for job in jobs}

    async def listing(failures: int) -> tuple[int, dict[str, tuple[str, str]]]:
        timeout = None if total_timeout is None else lookup_timeout(total_timeout, failures)
        found: dict[str, tuple[str, str]] = {}
        listed = 0
        async for image in client.describe_custom_images(page_size=1000, request_timeout=timeout):
            listed += 1
            name, status = image.get("imageName"), image.get("imageStatus")
            # several images may share a name: a live one wins, as it does for the run
            wanted = isinstance(name, str) and name in names and isinstance(status, str)
            if wanted and (name not in found or status in LIVE_IMAGE_STATES):
                found[str(name)] = (str(image.get("imageId")), str(status))
        return listed, found

    listed, existing = await read_with_retries(listing, retry, what="list the images", rng=dice)
    ids = sorted({job.instance_id for job in jobs})
    states: dict[str, str] = {}
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        chunk = ids[start : start + MAX_IDS_PER_CALL]

        async def look_up(_failures: int, chunk: list[str] = chunk) -> dict[str, str]:
            return await client.describe_instances_status(chunk)

        states |= await read_with_retries(look_up, retry, what="look up the instances' states", rng=dice)
    plan = Plan(images_listed=listed)
    for job in jobs:
        state = states.get(job.instance_id)
        verdict = job_verdict(
            state, existing.get(job.image_name), stop_running=stop_running, leave_stopped=leave_stopped
        )
        plan.jobs.append((job, state, verdict))
    if keep is not None:
        plan.deletions = await _deletions(client, plan, keep, retry, dice)
    if calls is not None:
        plan.calls = calls.calls
        plan.latency = statistics.median(calls.elapsed) if calls.elapsed else 0.0
    return plan


async def _deletions(
    client: ZecClient, plan: Plan, keep: KeepRule, retry: RetryOptions, rng: random.Random
) -> list[dict[str, Any]]:
    """What retention would delete: each job that makes an image prunes as the run would."""
    from .prune import list_policy_images  # the run's own listing of the policy

    async def policy_images(_failures: int) -> list[Any]:
        return await list_policy_images(client, keep.policy)

    what = f"list the images of policy {keep.policy!r}"
    book = KeepBook(keep, await read_with_retries(policy_images, retry, what=what, rng=rng))
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
