"""Resume glue: put each job back at its step from what the journal says of it.

:func:`batch.resume.prepare` reads the journal; this module turns its records into jobs:

* a job with a final result is not run again;
* a job whose CreateImage may have been sent (an ``intent`` record) starts at ``check`` with a
  look-up by name owed before any new CreateImage (no sooner than ``--lookup-delay`` after this
  process started), and the name rule adopts an image by its name as its own;
* a job whose instance an earlier process stopped keeps the power facts of its record (state
  at start, actions, forced); the run's first restore has started that instance already;
* every other job starts at ``check`` as in a new run.

After a fatal error, :func:`end_never_started` says how a job never handed out ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import JobListError
from ..models import Status
from ..pipeline.create import ADOPTED_RESUMED, end_unknown
from ..pipeline.job import JobState, PowerFacts
from ..pipeline.outcome import End, Step
from ..power import PowerLedger
from ..sources import JobList

__all__ = ["end_never_started", "jobs_at_their_step"]


def jobs_at_their_step(
    jobs: JobList,
    *,
    validated: int,
    done_ids: set[str],
    intents: Mapping[str, str],
    power_history: Mapping[str, dict[str, Any]],
    with_power: bool,
    look_after: float,
) -> Iterator[JobState]:
    """The jobs still to run, each at its step, read lazily in list order.

    Raises :class:`JobListError` for a row beyond the ``validated`` count (the copy grew).

    Args:
        jobs: the run's job list.
        validated: rows validated before the first call.
        done_ids: instances with a final result.
        intents: instances whose CreateImage may have been sent.
        power_history: earlier processes' power facts, by instance.
        with_power: ``--stop-running``.
        look_after: monotonic time before which a resumed job's look-up is not sent.
    """
    for read, job in enumerate(jobs, start=1):
        if read > validated:
            raise JobListError([f"{jobs.display}:{job.line}: a row the run did not validate (the copy grew)"])
        if job.instance_id in done_ids:
            continue
        sent = job.instance_id in intents
        power = PowerFacts() if with_power else None
        before = power_history.get(job.instance_id)
        if power is not None and before is not None:
            # What earlier processes did to the instance stays in the job's record.
            power.state_at_start = before.get("stateAtStart")
            power.actions = [str(a) for a in before.get("actions") or []]
            power.forced = bool(before.get("forced"))
        yield JobState(
            job,
            step=Step.CHECK,
            reconcile=sent,
            maybe_created=sent,
            resumed_intent=sent,
            intent_written=sent,
            look_after=look_after if sent else 0.0,
            power=power,
        )


def end_never_started(
    st: JobState,
    *,
    existing: tuple[str, str] | None,
    listed: bool,
    fatal_code: str | None,
    ledger: PowerLedger,
    reason: str,
) -> End:
    """How a job never handed out ends when the run stopped on a fatal error.

    A job of a new run is ``interrupted``. One an earlier process may have created is adopted
    if the starting listing found its name, ``unknown`` if the listing failed, else
    ``interrupted``.

    Args:
        st: the job.
        existing: what the starting listing found by its name.
        listed: whether the starting listing answered.
        fatal_code: the fatal error's code.
        ledger: the instances the run stopped.
        reason: the interruption's reason.
    """
    if not st.resumed_intent:
        return End(Status.INTERRUPTED, reason=reason)
    if not listed:
        return end_unknown(st, f"the listing of existing images failed ({fatal_code or 'stopped'})")
    if existing is not None:
        if st.power is not None:
            st.power.carry_restore(st.job.instance_id, ledger)
        return End(Status.SUCCEEDED, image_id=existing[0], image_status=existing[1], reason=ADOPTED_RESUMED)
    # The listing (a look-up of every name, made after the earlier run) did not show it.
    return End(Status.INTERRUPTED, reason=reason)
