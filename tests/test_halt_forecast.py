"""The pure rules of ``--halt``/``--canary`` and the arithmetic ``plan`` predicts with."""

from __future__ import annotations

import pytest

from batch.errors import UsageError
from batch.forecast import Durations, PlanCounts, forecast
from batch.halt import HaltRule, canary_verdict, halt_verdict, parse_halt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("fail=1", HaltRule(count=1), id="count-1"),
        pytest.param(" fail=25 ", HaltRule(count=25), id="count-spaces"),
        pytest.param("fail=10%", HaltRule(percent=10.0), id="percent"),
        pytest.param("fail=100%", HaltRule(percent=100.0), id="percent-all"),
    ],
)
def test_parse_halt_accepts(text: str, expected: HaltRule) -> None:
    """The two documented forms parse to their rule."""
    assert parse_halt(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("fail=0", "at least 1", id="zero"),
        pytest.param("fail=0%", "between 1 and 100", id="zero-percent"),
        pytest.param("fail=101%", "between 1 and 100", id="over-100"),
        pytest.param("fail=-1", "fail=N", id="negative"),
        pytest.param("now,fail=1", "fail=N", id="parallel-when"),
        pytest.param("fail=1.5", "fail=N", id="fraction"),
        pytest.param("", "fail=N", id="empty"),
    ],
)
def test_parse_halt_refuses(text: str, words: str) -> None:
    """Anything but fail=N / fail=P% is a usage error naming the forms."""
    with pytest.raises(UsageError, match="--halt") as info:
        parse_halt(text)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("rule", "ended", "failed", "halt_min", "halts"),
    [
        pytest.param(None, 100, 100, 20, False, id="no-rule"),
        pytest.param(HaltRule(count=3), 3, 2, 20, False, id="count-below"),
        pytest.param(HaltRule(count=3), 3, 3, 20, True, id="count-reached-before-min"),
        pytest.param(HaltRule(percent=10.0), 19, 19, 20, False, id="percent-before-min"),
        pytest.param(HaltRule(percent=10.0), 20, 2, 20, True, id="percent-at-min"),
        pytest.param(HaltRule(percent=10.0), 20, 1, 20, False, id="percent-below"),
        pytest.param(HaltRule(percent=20.0), 25, 5, 20, True, id="percent-exact"),
        pytest.param(HaltRule(percent=50.0), 4, 2, 0, True, id="min-zero-counts-from-one"),
        pytest.param(HaltRule(percent=50.0), 0, 0, 0, False, id="nothing-ended"),
    ],
)
def test_halt_verdict(rule: HaltRule | None, ended: int, failed: int, halt_min: int, halts: bool) -> None:
    """The run halts exactly when the rule is met, percentages only after --halt-min jobs."""
    verdict = halt_verdict(rule, ended=ended, failed=failed, halt_min=halt_min)
    assert (verdict is not None) == halts
    if verdict is not None:
        assert verdict.startswith("--halt ")
        assert str(failed) in verdict


@pytest.mark.parametrize(
    ("canaries", "ended", "failed", "halts"),
    [
        pytest.param(0, 5, 5, False, id="no-canary"),
        pytest.param(5, 3, 0, False, id="canaries-fine"),
        pytest.param(5, 1, 1, True, id="first-canary-fails"),
        pytest.param(5, 5, 1, True, id="last-canary-fails"),
    ],
)
def test_canary_verdict(canaries: int, ended: int, failed: int, halts: bool) -> None:
    """Any failed canary halts the run before the rest."""
    assert (canary_verdict(canaries=canaries, ended=ended, failed=failed) is not None) == halts


def test_forecast_create_only_is_rate_bound() -> None:
    """Without power steps, calls are the listing plus one CreateImage a job, and the rate bounds the time."""
    f = forecast(
        PlanCounts(jobs=1000, to_create=990, existing_images=2500),
        rate=10,
        concurrency=8,
        latency=0.1,
        max_stopped=100,
        poll_interval=10,
    )
    assert f.calls == {"DescribeCustomImages": 3, "CreateImage": 990}
    assert f.bound == "rate"
    assert f.seconds == pytest.approx(99.3)


def test_forecast_slow_api_is_concurrency_bound() -> None:
    """A slow API with little concurrency makes concurrency the bound."""
    f = forecast(
        PlanCounts(jobs=100, to_create=100), rate=100, concurrency=2, latency=2.0, max_stopped=1, poll_interval=10
    )
    assert f.bound == "concurrency"
    assert f.seconds == pytest.approx(100.0)


def test_forecast_power_cycle_is_cap_bound_and_batches() -> None:
    """Stopping 1,000 instances 100 at a time is bounded by 10 waves, with batched power calls."""
    d = Durations(stop=30, image=120, boot=30)
    f = forecast(
        PlanCounts(jobs=1000, to_create=1000, to_stop=1000, restart=1000),
        rate=10,
        concurrency=8,
        latency=0.1,
        max_stopped=100,
        poll_interval=10,
        durations=d,
    )
    assert f.calls["StopInstances"] == 10
    assert f.calls["StartInstances"] == 10
    assert f.bound == "cap"
    assert f.seconds == pytest.approx(10 * (30 + 120 + 30 + 20))
    # batched waiting keeps the cycle well under the per-instance loop's several calls an instance
    assert f.total_calls / 1000 < 2


def test_forecast_leave_stopped_starts_nothing() -> None:
    """With --leave-stopped no StartInstances is predicted."""
    f = forecast(
        PlanCounts(jobs=10, to_create=10, to_stop=10, restart=0),
        rate=10,
        concurrency=8,
        latency=0.1,
        max_stopped=5,
        poll_interval=5,
    )
    assert "StartInstances" not in f.calls
    assert f.calls["StopInstances"] == 2


def test_forecast_deletes_in_batches() -> None:
    """Retention's deletions are predicted 100 ids a call."""
    f = forecast(
        PlanCounts(jobs=10, to_create=0, to_delete=250),
        rate=10,
        concurrency=8,
        latency=0.1,
        max_stopped=1,
        poll_interval=5,
    )
    assert f.calls["DeleteImages"] == 3


def test_halt_watch_counts_and_canaries() -> None:
    """Interrupted jobs are not counted; a failed canary halts once; earlier segments' counts carry."""
    from batch.models import Status
    from batch.run.halting import HaltWatch

    watch = HaltWatch(HaltRule(count=3), halt_min=0, ended=10, failed=2)
    watch.canary("c1")
    watch.canary("c2")
    assert watch.canaries_pending
    assert watch.on_end("x", Status.INTERRUPTED) is None
    assert watch.ended == 10
    assert watch.on_end("c1", Status.SUCCEEDED) is None
    first = watch.on_end("c2", Status.UNKNOWN)  # the third failure of the run, and a failed canary
    assert first is not None
    assert first.startswith("--canary 2")
    assert not watch.canaries_pending
    assert watch.on_end("y", Status.FAILED) is None  # halts once
