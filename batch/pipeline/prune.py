"""The prune step (``run --keep``): once a job's image is AVAILABLE, delete its instance's older images.

A job that would end ``succeeded`` with an AVAILABLE image owes a prune (:func:`divert`, asked by
the worker loop after the start step, so an instance this run stopped is started again first):

* the rules (:meth:`batch.keep.KeepBook.choose`, over the run's one policy listing plus the new
  image) say which images of the instance go;
* their ids join the run's one DeleteImages :class:`~batch.tracking.Batcher` (100 a call, across
  jobs); each call's ids are durable in the journal (``delete`` records) before it is sent;
* an id an answer lists as failed, or every id of a call that failed, is looked up by id
  (DescribeCustomImages) before anything is resent: gone or DELETING counts as deleted; one still
  there is sent again after the back-off :func:`batch.policy.decide` gives (``Call.DELETE``), up to
  ``--max-attempts``, then recorded in the job's ``pruneErrors``;
* then the job ends as it was going to, with ``prunedImageIds`` (and ``keptImageIds``).

A job whose image failed never owes a prune ("keep the last N good"). A run that stops before a
job's prune ends records the job ``interrupted`` (not final): ``--resume`` adopts its image and
prunes by the resume's own listing, where images already DELETING or gone are not chosen again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..client import ZecClient
from ..errors import ApiError, FatalRunError, ThrottledError
from ..journal import JournalWriter
from ..keep import KeepBook, new_image_record
from ..models import Status
from ..ownership import ownership_tags
from ..policy import Attempts, Call, Retry, decide
from ..prune import LISTED_FAILED, image_statuses
from ..retention import AVAILABLE, DELETING, ImageRecord
from ..tracking import Batcher, BatchResult
from . import outcome as o
from .context import Context
from .job import JobState, PruneFacts

__all__ = ["Keeper", "close_ending", "divert", "on_deleted", "prune_fields", "prune_step", "release"]


class Keeper:
    """The run's retention: the policy's listing, the DeleteImages batcher, what the journal says was sent.

    Args:
        book: the policy's images as listed at the run's start, and the rules.
        writer: the journal (each call's ids are durable before it is sent).
        client: the API client.
        journaled: the journal's ``delete`` records of earlier processes (image id: instance id).
        clock: monotonic clock of the batcher's linger.
    """

    def __init__(
        self,
        book: KeepBook,
        writer: JournalWriter,
        client: ZecClient,
        *,
        journaled: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book
        self.journaled = dict(journaled or {})
        self._writer = writer
        self._client = client
        #: image id -> instance id of every id handed to the batcher
        self._owner: dict[str, str] = {}
        self.deleter: Batcher[JobState] = Batcher(self._send, clock=clock)

    def add(self, st: JobState, image_id: str) -> None:
        """Send ``image_id`` for the job in a coming DeleteImages call.

        Args:
            st: the job.
            image_id: one of its instance's images.
        """
        self._owner[image_id] = st.job.instance_id
        self.deleter.add(st, image_id)

    async def _send(self, ids: list[str]) -> Sequence[str]:
        # Durable before the call: a resumed run knows DeleteImages may have been sent for these,
        # and counts those its listing no longer shows (or shows DELETING) as deleted.
        await self._writer.deleting({i: self._owner[i] for i in ids})
        return await self._client.delete_images(ids)


def _keeper(ctx: Context) -> Keeper:
    assert ctx.keep is not None
    return ctx.keep


def _facts(st: JobState) -> PruneFacts:
    assert st.prune is not None
    return st.prune


def _new_image(ctx: Context, st: JobState, image_id: str) -> ImageRecord:
    """The job's new image as the rules see it: as listed (an adopted one), else with the tags sent."""
    listed = _keeper(ctx).book.listed(image_id)
    if listed is not None and listed.created is not None:
        return replace(listed, status=AVAILABLE)
    tags = st.image_tags
    if not tags:
        # Adopted, and the listing did not show it with a stamp: it is the newest all the same.
        created = datetime.fromtimestamp(ctx.clock.wall(), UTC)
        tags = tuple(ownership_tags(ctx.options.policy, st.job.instance_id, created, ctx.run_id))
    return new_image_record(image_id, st.job.image_name, tags)


def divert(ctx: Context, st: JobState, ending: o.End) -> o.Outcome | None:
    """A job is about to end: if its image is AVAILABLE, its prune comes first (``None``: end now).

    Args:
        ctx: the run (with ``--keep``).
        st: the job.
        ending: how it ends.
    """
    if ending.status is not Status.SUCCEEDED or ending.image_status != AVAILABLE or not ending.image_id:
        return None
    if st.prune is None:
        st.prune = PruneFacts(_new_image(ctx, st, ending.image_id))
    if st.prune.ending is not None:
        return None  # the prune's own ending
    st.prune.ending = ending
    return o.Next(o.Step.PRUNE)


def _stopped(p: PruneFacts, why: str) -> o.End:
    ending = p.ending
    assert ending is not None
    return _unpruned(ending, why)


def _unpruned(ending: o.End, why: str) -> o.End:
    reason = f"image AVAILABLE; the prune of older images did not finish ({why}); --resume finishes it"
    return o.End(Status.INTERRUPTED, image_id=ending.image_id, image_status=ending.image_status, reason=reason)


def _finish(p: PruneFacts) -> o.End:
    p.finished = True
    ending = p.ending
    assert ending is not None
    if not p.errors:
        return ending
    note = f"{len(p.errors)} older image(s) could not be deleted (pruneErrors)"
    return replace(ending, reason=f"{ending.reason}; {note}" if ending.reason else note)


async def prune_step(ctx: Context, st: JobState) -> o.Outcome:
    """Run the job's prune: choose (once), look failed ids up, send the rest, end when all are done.

    Args:
        ctx: the run.
        st: the job.
    """
    keep, p = _keeper(ctx), _facts(st)
    instance_id = st.job.instance_id
    if not p.planned:
        now = datetime.fromtimestamp(ctx.clock.wall(), UTC)
        choice = keep.book.choose(instance_id, p.image, now)
        p.pruned = keep.book.gone_since(instance_id, keep.journaled)
        p.send, p.kept, p.planned = list(choice.delete), list(choice.kept), True
    if ctx.stopping() and (p.send or p.check):
        return _stopped(p, "the run stopped")  # send nothing new
    if p.check:
        try:
            statuses = await image_statuses(ctx.client, p.check)
        except ApiError as err:
            return _lookup_failed(ctx, st, p, err)
        for image_id in p.check:
            status = statuses.get(image_id)
            if status is None or status == DELETING:
                p.pruned.append(image_id)  # gone or on its way: deleted, never sent again
            elif _verdict(ctx, p.last_error[image_id], p.failures[image_id]) is not None:
                p.send.append(image_id)
            else:
                p.errors[image_id] = _give_up(p.last_error[image_id], status)
        p.check = []
    if p.send:
        for image_id in p.send:
            keep.add(st, image_id)
        p.out += len(p.send)
        p.send = []
        return o.JOIN
    return _finish(p)


def _verdict(ctx: Context, err: ApiError, failures: int, server_wait: float = 0.0) -> Retry | None:
    attempts = Attempts(failures=failures, server_wait=server_wait, jitter=ctx.rng.random())
    verdict = decide(err, attempts, ctx.retry, call=Call.DELETE)
    return verdict if isinstance(verdict, Retry) else None


def _give_up(err: ApiError, status: str | None) -> dict[str, Any]:
    record = err.to_record()
    if err is LISTED_FAILED and status:
        record["message"] = f"{err.message}; it is {status}"
    return record


def _lookup_failed(ctx: Context, st: JobState, p: PruneFacts, err: ApiError) -> o.Outcome:
    """The look-up of failed ids failed: nothing is resent before one answers."""
    st.note_request(err.request_id)
    if isinstance(err, FatalRunError):
        return o.StopRun(err, _stopped(p, f"stopped by {err.code}"))
    wait = 0.0
    if isinstance(err, ThrottledError):
        wait = ctx.meter.on_throttled(err.retry_after)
    delay, again = 0.0, []
    for image_id in p.check:
        p.failures[image_id] += not isinstance(err, ThrottledError)
        verdict = _verdict(ctx, err, p.failures[image_id], wait)
        if verdict is None:
            p.errors[image_id] = {**err.to_record(), "lastDeleteError": p.last_error[image_id].to_record()}
        else:
            again.append(image_id)
            delay = max(delay, verdict.delay)
    p.check = again
    if not again:
        return o.Next(o.Step.PRUNE)  # nothing left to look at: finish
    ctx.retries += 1
    return o.Retry(ctx.now() + delay)


def on_deleted(ctx: Context, st: JobState, r: BatchResult[JobState]) -> o.Outcome | None:
    """A DeleteImages call answered for one of the job's ids; the job's next outcome once all have.

    Args:
        ctx: the run.
        st: the job.
        r: the call's answer for the id.
    """
    p = _facts(st)
    p.out -= 1
    if r.request_id:
        st.note_request(r.request_id)
    if r.ok:
        p.pruned.append(r.item_id)
    else:
        # Listed as failed, or the call failed (its answer may be lost): look before resending.
        err = r.error or LISTED_FAILED
        p.failures[r.item_id] += not isinstance(err, ThrottledError)
        p.last_error[r.item_id] = err
        p.check.append(r.item_id)
    if p.out > 0:
        return None
    fatal = next((e for e in p.last_error.values() if isinstance(e, FatalRunError)), None)
    if fatal is not None:
        return o.StopRun(fatal, _stopped(p, f"stopped by {fatal.code}"))
    if ctx.stopping() and (p.check or p.send):
        return _stopped(p, "the run stopped")
    if not p.check:
        return _finish(p)
    last = p.last_error[p.check[-1]]
    wait = ctx.meter.on_throttled(last.retry_after) if isinstance(last, ThrottledError) else 0.0
    worst = max(p.failures[i] for i in p.check)
    verdict = _verdict(ctx, last, worst, wait)
    ctx.retries += 1
    return o.Next(o.Step.PRUNE, verdict.delay if verdict is not None else 0.0)


def release(ctx: Context) -> list[tuple[JobState, o.End]]:
    """The run stops: take back the ids not yet sent; the jobs left with nothing in a call end now.

    Args:
        ctx: the run.
    """
    ended: list[tuple[JobState, o.End]] = []
    for st, image_id in _keeper(ctx).deleter.drain():
        p = _facts(st)
        p.out -= 1
        p.send.append(image_id)  # never sent (nor journaled): the resume chooses it again
        if p.out == 0:
            ended.append((st, _stopped(p, "the run stopped")))
    return ended


def close_ending(ctx: Context, st: JobState, ending: o.End) -> o.End:
    """How a job of a ``--keep`` run is recorded: one whose image is AVAILABLE but whose prune did
    not run to its end (the run stopped) is ``interrupted``, so that ``--resume`` prunes.

    Args:
        ctx: the run.
        st: the job.
        ending: how it ends.
    """
    del ctx
    done = st.prune is not None and st.prune.finished
    if done or ending.status is not Status.SUCCEEDED or ending.image_status != AVAILABLE:
        return ending
    return _unpruned(ending, "the run stopped first")


def prune_fields(st: JobState) -> dict[str, Any]:
    """A ``--keep`` run's result-line fields: ``prunedImageIds``, ``keptImageIds``, ``pruneErrors``.

    Args:
        st: the job.
    """
    if st.prune is None:
        return {"prunedImageIds": [], "keptImageIds": []}
    return st.prune.record()
