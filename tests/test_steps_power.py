"""The power steps' outcomes (check, stop, start) for each delivery, and the worker loop's
diversion of an ending to the start step, without HTTP, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from batch.errors import ApiError
from batch.models import Status
from batch.options import RunOptions
from batch.pipeline import outcome as o
from batch.pipeline.job import JobState
from batch.pipeline.power import Lifecycle
from batch.power import DownCap, PowerLedger
from batch.run.tally import Tally
from batch.run.workers import Pool
from batch.scheduling import Dispatcher
from batch.tracking import BatchResult, Kind, Outcome, Resolution

from ._steps_helpers import FakeClock, job_state, make_context


@dataclass
class Host:
    """Collects what the lifecycle hands back to the run."""

    options: RunOptions
    writer: Any = None
    applied: list[tuple[JobState, o.Outcome]] = field(default_factory=list)
    fatal: list[ApiError] = field(default_factory=list)

    def apply(self, st: JobState, outcome: o.Outcome) -> None:
        """Record an outcome."""
        self.applied.append((st, outcome))

    def stop_run(self, err: ApiError) -> None:
        """Record a fatal error."""
        self.fatal.append(err)


#: a client whose power calls are never made (the batchers never run here)
NO_CLIENT: Any = SimpleNamespace(stop_instances=None, start_instances=None)


def lifecycle(clock: FakeClock, *, cap: int = 1, **options: Any) -> tuple[Lifecycle, Host]:
    """A lifecycle over a poller that is never run (deliveries are made by hand)."""
    ctx = make_context(clock, stop_running=True, **options)
    host = Host(ctx.options)
    ledger = PowerLedger(record_started=lambda _i: None, clock=lambda: clock.now)
    life = Lifecycle(host, NO_CLIENT, ctx.poller, DownCap(cap), ledger, clock=lambda: clock.now)
    return life, host


def checked(life: Lifecycle, st: JobState, outcome: Outcome, state: str | None) -> None:
    """Begin the check step and deliver its state."""
    assert isinstance(life.begin(st), o.Await)
    life.on_state(Resolution(st, Kind.INSTANCE, st.job.instance_id, outcome, state))


@pytest.mark.parametrize(
    ("outcome", "state", "expected"),
    [
        pytest.param(Outcome.REACHED, "RUNNING", o.Next(o.Step.STOP), id="running-stops"),
        pytest.param(Outcome.REACHED, "STOPPED", o.Next(o.Step.CREATE), id="stopped-creates"),
        pytest.param(Outcome.FAILED, "RECYCLE", "INSTANCE_RECYCLE", id="recycle-fails"),
        pytest.param(Outcome.MISSING, None, "INVALID_INSTANCE_NOT_FOUND", id="unknown-fails"),
        pytest.param(Outcome.TIMEOUT, "REBOOT", "STATE_TIMEOUT", id="stuck-fails"),
    ],
)
def test_check_step_decides_as_the_plan_does(outcome: Outcome, state: str | None, expected: Any) -> None:
    """The check step's first decision on a state is plan's power_verdict: stop, create or fail."""
    life, host = lifecycle(FakeClock())
    st = job_state(power=True)
    checked(life, st, outcome, state)
    [(got_st, got)] = host.applied
    assert got_st is st
    if isinstance(expected, str):
        assert isinstance(got, o.End)
        assert got.status is Status.FAILED
        assert got.error is not None
        assert got.error.code == expected
    else:
        assert got == expected
    assert st.power is not None
    assert st.power.state_at_start == state


def test_check_step_queues_at_the_cap_and_admits_when_a_slot_frees() -> None:
    """A RUNNING instance over the cap waits in the queue; the slot freed by an ending re-checks it."""
    clock = FakeClock()
    life, host = lifecycle(clock, cap=1)
    first, second = job_state("i-1", power=True), job_state("i-2", "img-2", power=True)
    checked(life, first, Outcome.REACHED, "RUNNING")
    checked(life, second, Outcome.REACHED, "RUNNING")
    assert [out for _, out in host.applied] == [o.Next(o.Step.STOP)]
    assert life.counts()["queued"] == 1
    life.ended(first)  # its slot comes free
    assert life.counts()["queued"] == 0
    assert second.power is not None
    assert second.power.step == "check"
    assert second.power.held_slot


def test_stop_answer_awaits_stopped_and_a_hang_is_forced() -> None:
    """An accepted stop awaits STOPPED; a graceful stop past --stop-timeout goes back to stop, forced."""
    life, host = lifecycle(FakeClock())
    st = job_state(power=True)
    checked(life, st, Outcome.REACHED, "RUNNING")
    assert st.power is not None
    st.power.step = "stop"
    life._held[id(st)] = st  # as step() does when it joins the batch
    life.on_stop(BatchResult(st, "i-1", ok=True, error=None, request_id="r-1"))
    assert st.power.stopped_by_us
    assert st.power.actions == ["stopped"]
    assert st.power.step == "stopping"
    life.on_state(Resolution(st, Kind.INSTANCE, "i-1", Outcome.TIMEOUT, "STOPPING"))
    assert host.applied[-1] == (st, o.Next(o.Step.STOP))
    assert st.power.step == "force"


def test_running_again_ends_the_job_as_its_image_said() -> None:
    """After the start, RUNNING seen ends the job with the ending kept for it, and frees its slot."""
    life, host = lifecycle(FakeClock())
    st = job_state(power=True)
    assert st.power is not None
    st.power.stopped_by_us = st.power.held_slot = True
    life.cap.down = 1
    ending = o.End(Status.SUCCEEDED, image_id="im-1", image_status="AVAILABLE")
    assert life.divert_to_start(st, ending) == o.Next(o.Step.START)
    life._held[id(st)] = st
    life.on_start(BatchResult(st, "i-1", ok=True, error=None, request_id="r-2"))
    life.on_state(Resolution(st, Kind.INSTANCE, "i-1", Outcome.REACHED, "RUNNING"))
    assert host.applied[-1] == (st, ending)
    assert st.power.started
    assert st.power.actions == ["started"]
    assert life.cap.down == 0


@pytest.mark.anyio
async def test_worker_loop_sends_a_failed_job_whose_instance_it_stopped_to_start() -> None:
    """An ending for a job whose instance the run stopped becomes the start step, not a result."""
    clock = FakeClock()
    ctx = make_context(clock, stop_running=True)
    st = job_state(power=True)
    assert st.power is not None
    st.power.stopped_by_us = True
    dispatcher: Dispatcher[JobState] = Dispatcher(iter([st]), clock=lambda: clock.now)
    pool = Pool(ctx, dispatcher, Tally(), lambda: "test")
    ctx.life = Lifecycle(pool, NO_CLIENT, ctx.poller, DownCap(1), PowerLedger(lambda _i: None))
    assert await dispatcher.take() is st
    pool.apply(st, o.End(Status.FAILED, error=ApiError("IMAGE_FAILED", "ended FAILED")))
    assert st.step is o.Step.START
    assert st.power.pending_end is not None
    assert st.power.pending_end.status is Status.FAILED
    assert dispatcher.in_flight == 0
    assert dispatcher.waiting == 1
    assert pool.tally.by_status == {}  # no result yet
