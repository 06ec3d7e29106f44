"""Retention's API work: one listing of a policy's images, and DeleteImages done safely.

:class:`Pruner` lists the policy's images once (DescribeCustomImages with the policy's tag,
1,000 a page, every page) and deletes what a :class:`~batch.retention.RetentionPlan` says:

* at most 100 ids a DeleteImages call, each call's ids made durable in the journal first
  (``before_send``), so a resumed process knows what may have been sent;
* an id the answer lists as failed, or every id of a call that failed, is looked at again
  (DescribeCustomImages by id) before anything is resent: gone or DELETING counts as deleted,
  so no image is ever sent twice once it is on its way; one still there is retried with
  back-off, up to ``max_attempts``, then recorded as failed with the last error.

``imagebatch prune`` (:mod:`batch.prunecmd`) and ``run --keep`` share it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import anyio
from aiolimiter import AsyncLimiter

from .answers import malformed
from .client import MAX_IDS_PER_CALL, MAX_PAGE_SIZE, RequestRecord, ZecClient
from .credentials import Credentials
from .errors import ApiError, FatalRunError, LostAnswerError, PermanentJobError, ThrottledError, UsageError
from .options import MIN_RATE
from .ownership import POLICY_KEY, policy_problem
from .retention import DELETING, ImageRecord, RetentionOptions
from .scheduling import full_jitter

__all__ = ["ApiCounters", "Before", "PruneSettings", "Pruner", "Resolved", "make_client"]

#: Awaited with a call's ``{image id: instance id}`` before its DeleteImages is sent.
Before = Callable[[Mapping[str, str]], Awaitable[None]]
#: Told each image's end: ``(image id, instance id, None)`` deleted, or the error's record.
Resolved = Callable[[str, str, Mapping[str, Any] | None], None]

#: Fields a resume may not change: they decide what is deleted.
IDENTITY_FIELDS = ("policy", "keep", "max_age_days", "orphans", "prune_failed")


@dataclass(frozen=True, slots=True)
class PruneSettings:
    """The knobs of a prune (its flags), kept in ``run.json`` so a resume deletes by the same rules.

    Args:
        policy: the policy whose images are pruned.
        keep: AVAILABLE images kept per instance (the newest).
        max_age_days: also delete AVAILABLE images older than this (never the newest).
        orphans: also prune instances that are not in the job list.
        prune_failed: also delete FAILED and UNAVAILABLE images.
        rate: API requests a second.
        backoff_base: first back-off window, seconds.
        backoff_cap: largest back-off window, seconds.
        max_attempts: tries per image before it is recorded as failed.
        seed: seed of the back-off jitter.
    """

    policy: str
    keep: int
    max_age_days: float | None = None
    orphans: bool = False
    prune_failed: bool = False
    rate: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_attempts: int = 8
    seed: int | None = None

    def check(self) -> None:
        """Raise :class:`UsageError` naming the flag of a value no prune can use."""
        problem = policy_problem(self.policy)
        checks = [
            (problem is None, problem or ""),
            (self.keep >= 1, "--keep must be at least 1: the newest AVAILABLE image is never deleted"),
            (self.max_age_days is None or self.max_age_days > 0, "--max-age must be a positive number of days"),
            (self.rate >= MIN_RATE, f"--rate must be at least {MIN_RATE:g} requests a second"),
            (0 < self.backoff_base <= self.backoff_cap, "--backoff-base must be positive and at most --backoff-cap"),
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_record(self) -> dict[str, Any]:
        """The settings as stored in ``run.json``."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PruneSettings:
        """Read settings stored by :meth:`to_record` (unknown keys are ignored).

        Raises:
            ValueError: ``policy`` or ``keep`` is missing or of the wrong kind.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if not isinstance(values.get("policy"), str) or type(values.get("keep")) is not int:
            msg = "has no prune policy and keep"
            raise ValueError(msg)
        return cls(**values)

    def retention(self, now: datetime, instance_ids: frozenset[str]) -> RetentionOptions:
        """The retention rules' options.

        Args:
            now: the time ``--max-age`` counts back from.
            instance_ids: the job list's instances.
        """
        age = None if self.max_age_days is None else timedelta(days=self.max_age_days)
        return RetentionOptions(
            policy=self.policy,
            keep=self.keep,
            now=now,
            max_age=age,
            prune_failed=self.prune_failed,
            orphans=self.orphans,
            instance_ids=instance_ids,
        )


class ApiCounters:
    """API calls by action and by answer code (``OK`` for success), for the journal's checkpoints."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()

    def observe(self, record: RequestRecord) -> None:
        """Count one request (a client's ``observer``).

        Args:
            record: the request.
        """
        self.calls[record.action] += 1
        self.codes[record.code or "OK"] += 1


def make_client(settings: PruneSettings, credentials: Credentials, endpoint: str, counters: ApiCounters) -> ZecClient:
    """A client paced at ``settings.rate`` that counts its requests (call it in the running loop).

    Args:
        settings: the prune's settings.
        credentials: the API credentials.
        endpoint: the API base URL.
        counters: told about each request.
    """
    # One limiter per run, made in the running loop; capacity one: no first-second burst.
    limiter = AsyncLimiter(1, 1 / settings.rate)

    async def gate(_action: str) -> None:
        await limiter.acquire()

    return ZecClient(endpoint, credentials, gate=gate, observer=counters.observe)


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        yield list(ids[start : start + MAX_IDS_PER_CALL])


def _listed_failed(status: str | None) -> dict[str, Any]:
    shown = f"; it is {status}" if status else ""
    return {"code": "DELETE_FAILED", "message": f"DeleteImages listed the image as failed{shown}"}


class Pruner:
    """Lists a policy's images and deletes images by plan.

    Args:
        client: an open client.
        settings: the policy and the retry knobs.
        sleep: awaited for back-off (tests pass a fake one).
    """

    def __init__(
        self, client: ZecClient, settings: PruneSettings, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    ) -> None:
        self.client = client
        self.settings = settings
        self._sleep = sleep
        self._rng = random.Random(settings.seed)  # noqa: S311 - back-off jitter, not crypto
        #: retries scheduled (for the summary)
        self.retries = 0

    async def _back_off(self, attempt: int, err: ApiError | None) -> None:
        self.retries += 1
        s = self.settings
        delay = full_jitter(attempt, base=s.backoff_base, cap=s.backoff_cap, rng=self._rng)
        if err is not None and err.retry_after is not None:
            delay = max(delay, err.retry_after)
        await self._sleep(delay)

    async def list_images(self) -> list[ImageRecord]:
        """Every image with this policy's tag: one listing, 1,000 a page, all pages.

        Raises:
            ApiError: a fatal or permanent error, or a retryable one ``max_attempts`` times
                (``LISTING_CHANGED``: the images kept changing while they were listed).
        """
        failures = 0
        while True:
            try:
                return await self._list_once()
            except (FatalRunError, PermanentJobError):
                raise
            except ApiError as err:
                failures += not isinstance(err, ThrottledError)
                if failures >= self.settings.max_attempts:
                    raise
                await self._back_off(failures, err)

    async def _list_once(self) -> list[ImageRecord]:
        # Pages are offsets into a list that changes while DELETING images vanish (this prune's
        # own, after a crash): a page read after one vanished skips an image, and an instance
        # whose images were all skipped would look done. So totalCount must stay the same on
        # every page, or the whole listing is read again.
        action = "DescribeCustomImages"
        # ``tags`` here is a plain array of Tag, unlike CreateImage's {"tags": [...]}.
        tags = [{"key": POLICY_KEY, "value": self.settings.policy}]
        params: dict[str, Any] = {"pageSize": MAX_PAGE_SIZE, "tags": tags}
        found: dict[str, ImageRecord] = {}
        first: int | None = None
        page = 1
        while True:
            answer = await self.client.call(action, {**params, "pageNum": page})
            data, total = answer.data.get("dataSet") or [], answer.data.get("totalCount")
            if not isinstance(data, list) or not isinstance(total, int):
                raise malformed(action, f"{action} answered without a dataSet list and a totalCount", answer.status)
            if first is None:
                first = total
            elif total != first:
                msg = f"the policy's images changed while they were listed (totalCount {first}, then {total})"
                raise LostAnswerError("LISTING_CHANGED", msg, action=action)
            for item in data:
                record = ImageRecord.from_api(item) if isinstance(item, dict) else None
                if record is not None:
                    found[record.image_id] = record
            if not data or page * MAX_PAGE_SIZE >= total:
                return list(found.values())
            page += 1

    async def _statuses(self, image_ids: Sequence[str]) -> dict[str, str]:
        """Each listed image's status (absent: gone)."""
        statuses: dict[str, str] = {}
        for chunk in _chunks(image_ids):
            async for item in self.client.describe_custom_images(image_ids=chunk, page_size=MAX_IDS_PER_CALL):
                if isinstance(item.get("imageId"), str):
                    statuses[item["imageId"]] = str(item.get("imageStatus"))
        return statuses

    async def delete(self, deletions: Sequence[tuple[str, str]], *, before_send: Before, resolved: Resolved) -> None:
        """Delete ``(image id, instance id)`` pairs; tell ``resolved`` about each as it ends.

        Args:
            deletions: what to delete, each image once.
            before_send: awaited with each call's ids before DeleteImages is sent (the journal).
            resolved: told each image's end, once.

        Raises:
            FatalRunError: nothing more can succeed (credentials); the images not yet told
                about were not deleted, or their DeleteImages may have been sent (the journal
                says which).
        """
        owner = dict(deletions)
        send = list(owner)
        check: list[str] = []
        failures: Counter[str] = Counter()
        last_error: dict[str, Mapping[str, Any]] = {}
        rounds = 0
        hint: ApiError | None = None  # the last error of a round: its Retry-After, if any, is honoured
        while send or check:
            if check:
                send += await self._check(check, owner, failures, last_error, resolved)
                check = []
            for chunk in _chunks(send):
                await before_send({i: owner[i] for i in chunk})
                err: ApiError | None = None
                try:
                    failed = set(await self.client.delete_images(chunk))
                except FatalRunError:
                    raise
                except ApiError as exc:
                    failed, err, hint = set(chunk), exc, exc
                for image_id in chunk:
                    if image_id not in failed:
                        resolved(image_id, owner[image_id], None)
                        continue
                    # Look before resending: the image may be DELETING already (a lost answer,
                    # or a call that failed because another id of it did not exist).
                    failures[image_id] += not isinstance(err, ThrottledError)
                    last_error[image_id] = err.to_record() if err is not None else _listed_failed(None)
                    check.append(image_id)
            send = []
            if check:
                await self._back_off(rounds, hint)
                rounds, hint = rounds + 1, None

    async def _check(
        self,
        image_ids: list[str],
        owner: Mapping[str, str],
        failures: Counter[str],
        last_error: dict[str, Mapping[str, Any]],
        resolved: Resolved,
    ) -> list[str]:
        """Look at images whose delete failed; resolve the gone, DELETING and given-up ones; return the rest."""
        limit = self.settings.max_attempts
        try:
            statuses = await self._statuses(image_ids)
        except FatalRunError:
            raise
        except ApiError as err:
            again = []
            for image_id in image_ids:
                failures[image_id] += 1
                if failures[image_id] >= limit:
                    resolved(image_id, owner[image_id], {**err.to_record(), "lastDeleteError": last_error[image_id]})
                else:
                    again.append(image_id)
            # The look-up failed: nothing is resent before a look-up succeeds.
            await self._back_off(min(failures[i] for i in image_ids), err)
            return await self._check(again, owner, failures, last_error, resolved) if again else []
        resend = []
        for image_id in image_ids:
            status = statuses.get(image_id)
            if status is None or status == DELETING:
                resolved(image_id, owner[image_id], None)
            elif failures[image_id] >= limit:
                error = last_error[image_id]
                if error.get("code") == "DELETE_FAILED":
                    error = _listed_failed(status)  # now with the status it is stuck in
                resolved(image_id, owner[image_id], error)
            else:
                resend.append(image_id)
        return resend
