"""Resume glue: each job back at its step from the journal's records, and how jobs never handed
out end after a fatal error."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from batch.errors import JobListError
from batch.models import Job, Status
from batch.pipeline.outcome import Step
from batch.power import PowerLedger
from batch.run.resume import end_never_started, jobs_at_their_step

from ._steps_helpers import job_state


@dataclass
class Rows:
    """A job list as the run reads it."""

    jobs: list[Job]
    display: str = "jobs.csv"

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)


ROWS = Rows([Job(line=n + 2, instance_id=f"i-{n}", image_name=f"img-{n}") for n in range(3)])


def test_jobs_come_back_at_their_step() -> None:
    """Ended jobs stay ended; a job whose CreateImage may have been sent owes a look-up first."""
    states = list(
        jobs_at_their_step(
            ROWS,  # type: ignore[arg-type]
            validated=3,
            done_ids={"i-0"},
            intents={"i-1": "img-1"},
            power_history={"i-1": {"stateAtStart": "RUNNING", "actions": ["stopped"], "forced": True}},
            with_power=True,
            look_after=50.0,
        )
    )
    assert [st.job.instance_id for st in states] == ["i-1", "i-2"]
    sent, fresh = states
    assert sent.step is Step.CHECK
    assert sent.reconcile
    assert sent.resumed_intent
    assert sent.look_after == 50.0
    assert sent.power is not None
    assert (sent.power.state_at_start, sent.power.actions, sent.power.forced) == ("RUNNING", ["stopped"], True)
    assert not fresh.reconcile
    assert fresh.look_after == 0.0


def test_a_row_beyond_the_validated_ones_is_an_error() -> None:
    """A job list that grew under the run names the file and line of the new row."""
    with pytest.raises(JobListError, match=r"jobs.csv:4: a row the run did not validate"):
        list(
            jobs_at_their_step(
                ROWS,  # type: ignore[arg-type]
                validated=2,
                done_ids=set(),
                intents={},
                power_history={},
                with_power=False,
                look_after=0.0,
            )
        )


@pytest.mark.parametrize(
    ("resumed", "listed", "existing", "status"),
    [
        pytest.param(False, True, None, Status.INTERRUPTED, id="new-job-interrupted"),
        pytest.param(True, False, None, Status.UNKNOWN, id="listing-failed-unknown"),
        pytest.param(True, True, ("im-1", "AVAILABLE"), Status.SUCCEEDED, id="listed-adopted"),
        pytest.param(True, True, None, Status.INTERRUPTED, id="not-listed-interrupted"),
    ],
)
def test_end_never_started(resumed: bool, listed: bool, existing: tuple[str, str] | None, status: Status) -> None:
    """After a fatal error a job never handed out ends by what the starting listing said of it."""
    st = job_state(resumed_intent=resumed)
    end = end_never_started(
        st,
        existing=existing,
        listed=listed,
        fatal_code="QUOTA",
        ledger=PowerLedger(record_started=lambda _i: None),
        reason="run stopped",
    )
    assert end.status is status
