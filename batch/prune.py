"""Retention's API work: one listing of a policy's images, and DeleteImages done safely.

:class:`Pruner` lists the policy's images once (DescribeCustomImages with the policy's tag,
1,000 a page, every page) and deletes what a :class:`~batch.retention.RetentionPlan` says:

* at most 100 ids a DeleteImages call, each call's ids made durable in the journal first
  (``before_send``), so a resumed process knows what may have been sent;
* an id the answer lists as failed, or every id of a call that failed, is looked at again
  (DescribeCustomImages by id) before anything is resent: gone or DELETING counts as deleted,
  so no image is ever sent twice once it is on its way; one still there is retried with
  back-off, up to ``max_attempts``, then recorded as failed with the last error.

Retries and back-off are the run's one retry policy (:func:`batch.policy.decide`, ``Call.LISTING``
for the listing, ``Call.DELETE`` for an image). ``run --keep`` lists with
:func:`list_policy_images` and looks failed ids up with :func:`image_statuses` too; its
deletions go through the run's batcher (:mod:`batch.pipeline.prune`).
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
from .errors import ApiError, FatalRunError, LostAnswerError, ThrottledError, UsageError
from .options import MIN_RATE
from .ownership import POLICY_KEY, policy_problem
from .policy import Attempts, Call, Retry, RetryOptions, decide
from .retention import DELETING, ImageRecord, RetentionOptions

__all__ = [
    "ApiCounters",
    "Before",
    "PruneSettings",
    "Pruner",
    "Resolved",
    "image_statuses",
    "list_policy_images",
    "make_client",
]

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


#: What the retry policy is told about an id an answer listed as failed (no error of its own).
LISTED_FAILED = ApiError("DELETE_FAILED", "DeleteImages listed the image as failed", action="DeleteImages")


async def list_policy_images(client: ZecClient, policy: str) -> list[ImageRecord]:
    """Every image with ``policy``'s tag, once: 1,000 a page, every page (one try, no retry).

    Pages are offsets into a list that changes while DELETING images vanish (a prune's own,
    after a crash): a page read after one vanished skips an image, and an instance whose images
    were all skipped would look done. So ``totalCount`` must stay the same on every page.

    Args:
        client: an open client.
        policy: the policy name.

    Raises:
        LostAnswerError: ``LISTING_CHANGED``, the images changed while they were listed (a retry
            reads them all again).
        ApiError: the listing's error.
    """
    action = "DescribeCustomImages"
    # ``tags`` here is a plain array of Tag, unlike CreateImage's {"tags": [...]}.
    tags = [{"key": POLICY_KEY, "value": policy}]
    params: dict[str, Any] = {"pageSize": MAX_PAGE_SIZE, "tags": tags}
    found: dict[str, ImageRecord] = {}
    first: int | None = None
    page = 1
    while True:
        answer = await client.call(action, {**params, "pageNum": page})
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


async def image_statuses(client: ZecClient, image_ids: Sequence[str]) -> dict[str, str]:
    """Each listed image's status, by id (an id absent from the answer is gone).

    Args:
        client: an open client.
        image_ids: the images to look at (100 a call).
    """
    statuses: dict[str, str] = {}
    for chunk in _chunks(image_ids):
        async for item in client.describe_custom_images(image_ids=chunk, page_size=MAX_IDS_PER_CALL):
            if isinstance(item.get("imageId"), str):
                statuses[item["imageId"]] = str(item.get("imageStatus"))
    return statuses


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
        # The one retry policy's knobs: --max-attempts bounds the listing's tries and each image's.
        self._retry = RetryOptions(
            max_attempts=settings.max_attempts,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
            lookup_attempts=settings.max_attempts,
        )
        #: retries scheduled (for the summary)
        self.retries = 0

    def _verdict(self, err: ApiError, failures: int, call: Call) -> Retry | None:
        """The retry policy's answer: a :class:`Retry` (with its delay), or ``None``: give up."""
        attempts = Attempts(failures=failures, server_wait=err.retry_after or 0.0, jitter=self._rng.random())
        verdict = decide(err, attempts, self._retry, call=call)
        return verdict if isinstance(verdict, Retry) else None

    async def _back_off(self, delay: float) -> None:
        self.retries += 1
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
                return await list_policy_images(self.client, self.settings.policy)
            except ApiError as err:
                failures += not isinstance(err, ThrottledError)
                verdict = self._verdict(err, failures, Call.LISTING)
                if verdict is None:
                    raise
                await self._back_off(verdict.delay)

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
                # Wait as the retry policy says for the most-failed image before looking again.
                worst = max(failures[i] for i in check)
                verdict = self._verdict(hint or LISTED_FAILED, worst, Call.DELETE)
                await self._back_off(verdict.delay if verdict is not None else 0.0)
                hint = None

    async def _check(
        self,
        image_ids: list[str],
        owner: Mapping[str, str],
        failures: Counter[str],
        last_error: dict[str, Mapping[str, Any]],
        resolved: Resolved,
    ) -> list[str]:
        """Look at images whose delete failed; resolve the gone, DELETING and given-up ones; return the rest."""
        try:
            statuses = await image_statuses(self.client, image_ids)
        except FatalRunError:
            raise
        except ApiError as err:
            again = []
            delay = 0.0
            for image_id in image_ids:
                failures[image_id] += 1
                verdict = self._verdict(err, failures[image_id], Call.DELETE)
                if verdict is None:
                    resolved(image_id, owner[image_id], {**err.to_record(), "lastDeleteError": last_error[image_id]})
                else:
                    again.append(image_id)
                    delay = max(delay, verdict.delay)
            if not again:
                return []
            # The look-up failed: nothing is resent before a look-up succeeds.
            await self._back_off(delay)
            return await self._check(again, owner, failures, last_error, resolved)
        resend = []
        for image_id in image_ids:
            status = statuses.get(image_id)
            if status is None or status == DELETING:
                resolved(image_id, owner[image_id], None)
            elif self._verdict(LISTED_FAILED, failures[image_id], Call.DELETE) is None:
                error = last_error[image_id]
                if error.get("code") == "DELETE_FAILED":
                    error = _listed_failed(status)  # now with the status it is stuck in
                resolved(image_id, owner[image_id], error)
            else:
                resend.append(image_id)
        return resend
