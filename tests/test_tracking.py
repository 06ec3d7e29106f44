"""batch.tracking: the pure state and poll-error decisions, the shared poller and the batcher,
the last two over HTTP against the fake server on loopback, on a fake clock shared with it."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from batch import Credentials, ZecClient
from batch.client import RequestRecord
from batch.errors import (
    AuthenticationError,
    FatalRunError,
    TransientServerError,
)
from batch.fake import FakeInstance
from batch.tracking import (
    Batcher,
    BatchResult,
    Kind,
    Outcome,
    Resolution,
    StatePoller,
    judge,
    state_outcome,
)

from .conftest import CREDS, FakeFactory

STOPPED = frozenset({"STOPPED"})


# ----- pure decisions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "state", "want", "expected"),
    [
        pytest.param(Kind.INSTANCE, "STOPPED", STOPPED, Outcome.REACHED, id="instance-wanted"),
        pytest.param(Kind.INSTANCE, "STOPPING", STOPPED, None, id="instance-transitional"),
        pytest.param(Kind.INSTANCE, "RUNNING", STOPPED, None, id="instance-not-yet"),
        pytest.param(Kind.INSTANCE, "RECYCLE", STOPPED, Outcome.FAILED, id="instance-recycle"),
        pytest.param(Kind.INSTANCE, "RECYCLING", STOPPED, Outcome.FAILED, id="instance-recycling"),
        pytest.param(Kind.INSTANCE, "RELEASING", STOPPED, Outcome.FAILED, id="instance-releasing"),
        pytest.param(Kind.INSTANCE, "CREATE_FAILED", STOPPED, Outcome.FAILED, id="instance-create-failed"),
        pytest.param(Kind.INSTANCE, "SOMETHING_NEW", STOPPED, None, id="instance-unknown-waits"),
        pytest.param(Kind.INSTANCE, "RECYCLE", frozenset({"RECYCLE"}), Outcome.REACHED, id="wanted-beats-failing"),
        pytest.param(Kind.INSTANCE, "RUNNING", frozenset({"RUNNING", "BOOTING"}), Outcome.REACHED, id="several-wanted"),
        pytest.param(Kind.IMAGE, "AVAILABLE", frozenset({"AVAILABLE"}), Outcome.REACHED, id="image-available"),
        pytest.param(Kind.IMAGE, "FAILED", frozenset({"AVAILABLE"}), Outcome.FAILED, id="image-failed"),
        pytest.param(Kind.IMAGE, "UNAVAILABLE", frozenset({"AVAILABLE"}), Outcome.FAILED, id="image-unavailable"),
        pytest.param(Kind.IMAGE, "CREATING", frozenset({"AVAILABLE"}), None, id="image-creating"),
        pytest.param(Kind.IMAGE, "SYNCING", frozenset({"AVAILABLE"}), None, id="image-syncing"),
        pytest.param(Kind.IMAGE, "DELETING", frozenset({"AVAILABLE"}), None, id="image-deleting-ends-missing-later"),
        pytest.param(
            Kind.IMAGE, "RECYCLE", frozenset({"AVAILABLE"}), None, id="instance-states-mean-nothing-to-images"
        ),
    ],
)
def test_state_outcome(kind: Kind, state: str, want: frozenset[str], expected: Outcome | None) -> None:
    """A wanted state ends the wait reached, a state of no return failed, anything else waits."""
    assert state_outcome(kind, state, want) is expected


@pytest.mark.parametrize(
    ("seen", "misses", "now", "expected"),
    [
        pytest.param("STOPPED", 0, 5.0, Outcome.REACHED, id="reached"),
        pytest.param("STOPPED", 0, 50.0, Outcome.REACHED, id="reached-wins-over-deadline"),
        pytest.param("RECYCLE", 0, 50.0, Outcome.FAILED, id="failed-wins-over-deadline"),
        pytest.param("STOPPING", 0, 5.0, None, id="transitional-waits"),
        pytest.param("STOPPING", 0, 10.0, Outcome.TIMEOUT, id="transitional-at-deadline"),
        pytest.param(None, 1, 5.0, None, id="absent-once-waits"),
        pytest.param(None, 2, 5.0, None, id="absent-twice-waits"),
        pytest.param(None, 3, 5.0, Outcome.MISSING, id="absent-three-times-missing"),
        pytest.param(None, 1, 10.0, Outcome.TIMEOUT, id="absent-at-deadline"),
    ],
)
def test_judge(seen: str | None, misses: int, now: float, expected: Outcome | None) -> None:
    """An answer ends a wait by its state, by absence (3 in a row) or by the deadline (10)."""
    got = judge(Kind.INSTANCE, seen, STOPPED, misses=misses, missing_polls=3, now=now, deadline=10.0)
    assert got is expected


# ----- the poller -----------------------------------------------------------------------------


class FakeTime:
    """A clock for the poller and the fake server together: each sleep moves it on at once."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.hook = hook

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.hook is not None:
            self.hook(len(self.sleeps))
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def resolve(poller: StatePoller[Any], count: int, **run: Any) -> list[Resolution[Any]]:
    """Run the poller until ``count`` waits ended, then stop it."""
    got: list[Resolution[Any]] = []
    enough = anyio.Event()

    def deliver(resolution: Resolution[Any]) -> None:
        got.append(resolution)
        if len(got) >= count:
            enough.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(poller.run, deliver, **run))
        await enough.wait()
        for _ in range(20):  # give a (wrong) loop the chance to poll an empty set
            await anyio.lowlevel.checkpoint()
        poller.stop()
    return got


async def fake_with_clock(
    make_fake: FakeFactory,
    fleet: list[FakeInstance],
    *,
    clock: FakeTime | None = None,
    config: dict[str, Any] | None = None,
    **cloud: Any,
) -> tuple[Any, FakeTime]:
    """A fake server whose cloud (its rate limit too) runs on a :class:`FakeTime`."""
    clock = clock if clock is not None else FakeTime()
    fake = await make_fake(fleet, cloud_kwargs={"clock": clock, **cloud}, **(config or {}))
    return fake, clock


def make_images(fake: Any, count: int) -> list[str]:
    """Create ``count`` CREATING images in the fake (one instance each), straight in its state."""
    return [fake.cloud.create_image(f"i-{n}", f"img-{n}", None, []).image_id for n in range(count)]


@pytest.mark.anyio
async def test_250_images_cost_three_calls_a_poll(make_fake: FakeFactory) -> None:
    """250 awaited images are looked up in ceil(250/100)=3 calls a poll, and all end reached."""
    fake, clock = await fake_with_clock(make_fake, [FakeInstance(f"i-{n}") for n in range(250)], image_ready_seconds=7)
    images = make_images(fake, 250)
    async with ZecClient(fake.url, CREDS) as client:
        poller: StatePoller[int] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        for n, image_id in enumerate(images):
            poller.await_image(n, image_id, deadline=clock() + 60)
        assert (len(poller), poller.awaited_images, poller.awaited_instances) == (250, 250, 0)
        got = await resolve(poller, 250)
    assert {(r.token, r.item_id) for r in got} == set(enumerate(images))
    assert {(r.kind, r.outcome, r.state) for r in got} == {(Kind.IMAGE, Outcome.REACHED, "AVAILABLE")}
    assert clock.sleeps == [5, 5], "first poll at 5 s (all CREATING), the second finds them AVAILABLE"
    assert (poller.polls, poller.calls, fake.calls["DescribeCustomImages"]) == (2, 6, 6)
    assert len(poller) == 0


@pytest.mark.anyio
async def test_instances_and_images_end_every_way(make_fake: FakeFactory) -> None:
    """Reached, failed, missing (three answers without it) and timeout (with the last state seen),
    while an image listed late is not missing."""
    fleet = [
        FakeInstance("i-stopping", status="RUNNING"),
        FakeInstance("i-recycled", status="RECYCLE"),
        FakeInstance("i-stuck", status="RUNNING"),
        FakeInstance("i-slow"),
        FakeInstance("i-late"),
        FakeInstance("i-bad"),
    ]
    fake, clock = await fake_with_clock(make_fake, fleet, image_ready_seconds=12, list_lag_seconds=6)
    fake.cloud.failed_images.add("i-bad")
    fake.cloud.stop_instances(["i-stopping"], force=False)  # STOPPING for 1 s, then STOPPED
    slow = fake.cloud.create_image("i-slow", "slow", None, []).image_id
    fake.cloud.image_ready_seconds = 1
    late = fake.cloud.create_image("i-late", "late", None, []).image_id  # listed only from 6 s on
    bad = fake.cloud.create_image("i-bad", "bad", None, []).image_id
    start = clock()
    async with ZecClient(fake.url, CREDS) as client:
        poller: StatePoller[str] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        poller.await_instance("stop", "i-stopping", STOPPED, start + 60)
        poller.await_instance("recycled", "i-recycled", STOPPED, start + 60)
        poller.await_instance("stuck", "i-stuck", STOPPED, start + 12)
        poller.await_instance("gone", "i-nowhere", STOPPED, start + 60)
        poller.await_image("slow", slow, start + 9)
        poller.await_image("late", late, start + 60)
        poller.await_image("bad", bad, start + 60)
        poller.await_image("never", "img-never", start + 60)
        assert (poller.awaited_instances, poller.awaited_images) == (4, 4)
        got = {r.token: r for r in await resolve(poller, 8)}
    ended = {token: (r.outcome, r.state) for token, r in got.items()}
    assert ended == {
        "stop": (Outcome.REACHED, "STOPPED"),
        "recycled": (Outcome.FAILED, "RECYCLE"),
        "stuck": (Outcome.TIMEOUT, "RUNNING"),
        "gone": (Outcome.MISSING, None),
        "slow": (Outcome.TIMEOUT, "CREATING"),
        "late": (Outcome.REACHED, "AVAILABLE"),
        "bad": (Outcome.FAILED, "FAILED"),
        "never": (Outcome.MISSING, None),
    }
    assert got["gone"].kind is Kind.INSTANCE
    assert got["never"].kind is Kind.IMAGE
    assert clock.sleeps == [5, 5, 5], "missing after the third poll; deadlines checked at polls, no timer each"


@pytest.mark.anyio
async def test_ten_thousand_instances_one_sleep_per_poll(make_fake: FakeFactory) -> None:
    """10,000 awaited instances: one sleep per poll (no timer per item), 100 calls a poll, and no
    poll once nothing is awaited."""
    fleet = [FakeInstance(f"i-{n:05d}", status="RUNNING") for n in range(10_000)]
    fake, clock = await fake_with_clock(make_fake, fleet)
    fake.cloud.stop_instances([i.instance_id for i in fleet[:5000]], force=False)
    async with ZecClient(fake.url, CREDS, pool_size=4) as client:
        poller: StatePoller[int] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        for n, inst in enumerate(fleet):
            poller.await_instance(n, inst.instance_id, STOPPED, clock() + 30)
        got = await resolve(poller, 10_000)
    outcomes = [r.outcome for r in sorted(got, key=lambda r: r.token)]
    assert outcomes == [Outcome.REACHED] * 5000 + [Outcome.TIMEOUT] * 5000
    assert poller.polls == 6, "at 5, 10, ..., 30 s"
    assert len(clock.sleeps) == poller.polls
    assert fake.calls["DescribeInstancesStatus"] == poller.calls == 100 + 5 * 50


@pytest.mark.anyio
async def test_throttled_poll_waits_as_told_and_rotates(make_fake: FakeFactory) -> None:
    """A 429 ends the poll, the next one waits the Retry-After and starts with the images not
    asked about, so every image is looked up although each poll gets only one call through."""
    fleet = [FakeInstance(f"i-{n}") for n in range(250)]
    limit = {"rate_limit": 0.1, "burst": 1.0, "retry_after": True}  # one call per 10 s
    fake, clock = await fake_with_clock(make_fake, fleet, config=limit, image_ready_seconds=1000)
    images = make_images(fake, 250)
    async with ZecClient(fake.url, CREDS) as client:
        poller: StatePoller[int] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        for n, image_id in enumerate(images):
            poller.await_image(n, image_id, deadline=clock() + 30)
        got = await resolve(poller, 250)
    # Polls at 5, 15, 25 s each got one call (100, 100, 50 images) through; at 35 s all are late.
    assert {(r.outcome, r.state) for r in got} == {(Outcome.TIMEOUT, "CREATING")}, "each image seen once"
    assert clock.sleeps == [5, 10, 10, 10], "Retry-After (10 s) beats the 5 s interval"
    assert (poller.polls, poller.failed_calls) == (4, 4)
    assert fake.codes["REQUEST_LIMIT_EXCEEDED"] == 4


@pytest.mark.anyio
async def test_failing_polls_retry_then_give_up(make_fake: FakeFactory) -> None:
    """503s are retried (a success in between resets the count) until max_failures in a row; then
    the wait ends ``error`` with the last error."""
    # 503 on polls 1-2, then one good poll, then 503 for good: 2 + 3 failures, not 5 in a row.
    plan = {1: 1.0, 3: 0.0, 4: 1.0}
    clock = FakeTime(hook=lambda n: setattr(fake.config, "error_rate", plan.get(n, fake.config.error_rate)))
    fake, _ = await fake_with_clock(make_fake, [FakeInstance("i-0", status="RUNNING")], clock=clock)
    async with ZecClient(fake.url, CREDS) as client:
        poller: StatePoller[str] = StatePoller(client, interval=5, max_failures=3, clock=clock, sleep=clock.sleep)
        poller.await_instance("job", "i-0", STOPPED, clock() + 1000)
        (resolution,) = await resolve(poller, 1)
    assert (resolution.outcome, resolution.state) == (Outcome.ERROR, "RUNNING")
    assert isinstance(resolution.error, TransientServerError)
    assert resolution.error.code == "SERVICE_TEMPORARY_UNAVAILABLE"
    assert resolution.error.request_id
    assert (poller.polls, poller.failed_calls) == (6, 5)


@pytest.mark.anyio
@pytest.mark.parametrize("with_callback", [pytest.param(True, id="on-fatal"), pytest.param(False, id="raises")])
async def test_fatal_error_stops_the_poller(make_fake: FakeFactory, with_callback: bool) -> None:
    """Refused credentials are reported through on_fatal (or raised) and stop the loop; the
    waits stay for drain()."""
    fake, clock = await fake_with_clock(make_fake, [FakeInstance("i-0")])
    wrong = Credentials(CREDS.access_key_id, "not-the-secret")
    fatal: list[FatalRunError] = []
    async with ZecClient(fake.url, wrong) as client:
        poller: StatePoller[str] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        poller.await_instance("job", "i-0", STOPPED, clock() + 60)
        if with_callback:
            await poller.run(lambda r: pytest.fail(f"nothing may end: {r}"), on_fatal=fatal.append)
        else:
            with pytest.raises(AuthenticationError) as caught:
                await poller.run(lambda r: pytest.fail(f"nothing may end: {r}"))
            fatal.append(caught.value)
    assert [type(e) for e in fatal] == [AuthenticationError]
    assert "not-the-secret" not in str(fatal[0])
    assert poller.polls == 1
    assert [(a.token, a.kind, a.item_id, a.state) for a in poller.drain()] == [("job", Kind.INSTANCE, "i-0", None)]
    assert len(poller) == 0


@pytest.mark.anyio
async def test_forget_ends_waits_without_delivery(make_fake: FakeFactory) -> None:
    """A forgotten token's waits end silently, the other token's go on; the same token awaiting
    the same item again replaces its wait."""
    fake, clock = await fake_with_clock(make_fake, [FakeInstance("i-0"), FakeInstance("i-1", status="RUNNING")])
    async with ZecClient(fake.url, CREDS) as client:
        poller: StatePoller[object] = StatePoller(client, interval=5, clock=clock, sleep=clock.sleep)
        keep, drop = object(), object()  # tokens are told apart by identity
        poller.await_instance(drop, "i-0", STOPPED, clock() + 60)
        poller.await_instance(drop, "i-1", STOPPED, clock() + 60)
        poller.await_instance(keep, "i-0", frozenset({"RUNNING"}), clock() + 60)
        poller.await_instance(keep, "i-0", STOPPED, clock() + 60)  # replaces the RUNNING wait
        assert len(poller) == 3
        poller.forget(drop)
        assert (len(poller), poller.awaited_instances) == (1, 1)
        got = await resolve(poller, 1)
    assert [(r.token, r.item_id, r.outcome) for r in got] == [(keep, "i-0", Outcome.REACHED)]
    assert poller.calls == 1


class ManualTime(FakeTime):
    """A clock that moves only when told; its sleeps last until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.napping = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.napping.set()
        await anyio.sleep_forever()

    async def next_nap(self) -> None:
        self.napping = anyio.Event()
        await self.napping.wait()


@pytest.mark.anyio
async def test_poll_soon_polls_early_but_not_twice_within_min_gap(make_fake: FakeFactory) -> None:
    """poll_soon() wakes a napping loop for an early poll; a second one within min_gap only moves
    the next poll to min_gap after the last."""
    fleet = [FakeInstance("i-0", status="RUNNING"), FakeInstance("i-1", status="RUNNING")]
    clock = ManualTime()
    fake = await make_fake(fleet, cloud_kwargs={"clock": clock})
    got: list[Resolution[str]] = []
    async with ZecClient(fake.url, CREDS) as client, anyio.create_task_group() as tg:
        poller: StatePoller[str] = StatePoller(client, interval=30, min_gap=3, clock=clock, sleep=clock.sleep)
        poller.poll_soon()  # nothing awaited: nothing to do
        poller.await_instance("a", "i-0", STOPPED, clock() + 300)
        poller.await_instance("b", "i-1", STOPPED, clock() + 300)
        tg.start_soon(poller.run, got.append)
        await clock.next_nap()
        assert clock.sleeps == [30]
        fake.cloud.stop_instances(["i-0"], force=False)
        clock.now += 2  # STOPPING lasts 1 s
        poller.poll_soon()
        await clock.next_nap()  # polled at once, then naps until the next interval
        assert [(r.token, r.outcome) for r in got] == [("a", Outcome.REACHED)]
        assert (poller.polls, clock.sleeps) == (1, [30, 30])
        clock.now += 1
        poller.poll_soon()
        await clock.next_nap()
        assert poller.polls == 1, "within min_gap of the last poll"
        assert clock.sleeps[-1] == 2, "the early poll comes min_gap (3 s) after the last"
        poller.stop()
    assert len(poller) == 1


# ----- the batcher ----------------------------------------------------------------------------


async def batch_all(batcher: Batcher[Any], count: int) -> list[BatchResult[Any]]:
    """Run the batcher until ``count`` results came, then stop it."""
    got: list[BatchResult[Any]] = []
    enough = anyio.Event()

    def deliver(result: BatchResult[Any]) -> None:
        got.append(result)
        if len(got) >= count:
            enough.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, deliver)
        await enough.wait()
        batcher.stop()
    return got


@pytest.mark.anyio
async def test_batcher_splits_250_ids_and_maps_failures(make_fake: FakeFactory) -> None:
    """250 ids go in 3 StopInstances calls of at most 100; the ids the API lists as failed are not
    ok, and every result carries the request id of its own call."""
    fleet = [FakeInstance(f"i-{n:03d}", status="STOPPED" if n % 7 == 0 else "RUNNING") for n in range(250)]
    fake = await make_fake(fleet)
    records: list[RequestRecord] = []
    sizes: list[int] = []
    async with ZecClient(fake.url, CREDS, observer=records.append) as client:

        async def stop(ids: list[str]) -> list[str]:
            sizes.append(len(ids))
            return await client.stop_instances(ids, force_shutdown=False)

        batcher: Batcher[int] = Batcher(stop)
        for n, inst in enumerate(fleet):
            batcher.add(n, inst.instance_id)
        assert (len(batcher), batcher.pending) == (250, 250)
        got = await batch_all(batcher, 250)
    assert sizes == [100, 100, 50]
    assert fake.calls["StopInstances"] == batcher.calls == 3
    assert {r.token: r.ok for r in got} == {n: n % 7 != 0 for n in range(250)}
    assert all(r.error is None for r in got)
    call_ids = [r.request_id for r in records if r.action == "StopInstances"]
    by_call = [[r.request_id for r in got if lo <= r.token < hi] for lo, hi in ((0, 100), (100, 200), (200, 250))]
    assert [set(ids) for ids in by_call] == [{rid} for rid in call_ids]
    assert len(set(call_ids)) == 3
    assert len(batcher) == 0


@pytest.mark.anyio
async def test_a_503_reaches_every_id_of_its_batch(make_fake: FakeFactory) -> None:
    """A whole-call 503 goes to each id of that call (with its request id); the next call is not
    affected."""
    fleet = [FakeInstance(f"i-{n:03d}") for n in range(150)]
    fake = await make_fake(fleet, error_rate=1.0)
    got: list[BatchResult[int]] = []

    def deliver(result: BatchResult[int]) -> None:
        fake.config.error_rate = 0.0  # only the first call meets the 503
        got.append(result)
        if len(got) == 150:
            batcher.stop()

    async with ZecClient(fake.url, CREDS) as client:
        batcher: Batcher[int] = Batcher(lambda ids: client.start_instances(ids))
        for n, inst in enumerate(fleet):
            batcher.add(n, inst.instance_id)
        await batcher.run(deliver)
    first, second = got[:100], got[100:]
    assert {r.token for r in first} == set(range(100))
    assert all(not r.ok and isinstance(r.error, TransientServerError) for r in first)
    assert {r.error.code for r in first if r.error} == {"SERVICE_TEMPORARY_UNAVAILABLE"}
    assert len({r.request_id for r in first}) == 1
    assert all(r.request_id and r.error and r.request_id == r.error.request_id for r in first)
    assert all(r.ok and r.error is None for r in second)
    assert fake.calls["StartInstances"] == 2


@pytest.mark.anyio
async def test_batcher_lingers_then_sends_a_small_batch_once_per_id(make_fake: FakeFactory) -> None:
    """A lone batch is sent after the linger without waiting to fill; an id added twice goes once
    and both adds get a result."""
    fake = await make_fake([FakeInstance("i-0"), FakeInstance("i-1")])
    sent: list[list[str]] = []
    async with ZecClient(fake.url, CREDS) as client:

        async def start(ids: list[str]) -> list[str]:
            sent.append(ids)
            return await client.start_instances(ids)

        batcher: Batcher[str] = Batcher(start, linger=0.01)
        batcher.add("a", "i-0")
        batcher.add("b", "i-1")
        batcher.add("c", "i-0")
        got = await batch_all(batcher, 3)
    assert sent == [["i-0", "i-1"]]
    assert sorted((r.token, r.item_id, r.ok) for r in got) == [
        ("a", "i-0", True),
        ("b", "i-1", True),
        ("c", "i-0", True),
    ]


@pytest.mark.anyio
async def test_batcher_caps_calls_in_flight(make_fake: FakeFactory) -> None:
    """With max_in_flight=2, two calls are out at once and never three."""
    fleet = [FakeInstance(f"i-{n:03d}", status="RUNNING") for n in range(500)]
    fake = await make_fake(fleet, latency=0.02)
    out, peak = 0, 0
    async with ZecClient(fake.url, CREDS) as client:

        async def stop(ids: list[str]) -> list[str]:
            nonlocal out, peak
            out += 1
            peak = max(peak, out)
            try:
                return await client.stop_instances(ids)
            finally:
                out -= 1

        batcher: Batcher[int] = Batcher(stop, max_in_flight=2)
        for n, inst in enumerate(fleet):
            batcher.add(n, inst.instance_id)
        got = await batch_all(batcher, 500)
    assert all(r.ok for r in got)
    assert (batcher.calls, peak) == (5, 2)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("close", "calls", "left"),
    [pytest.param(True, 1, 0, id="close-sends-pending"), pytest.param(False, 0, 3, id="stop-leaves-pending")],
)
async def test_batcher_close_and_stop(make_fake: FakeFactory, close: bool, calls: int, left: int) -> None:
    """close() sends what is pending without lingering, then returns; stop() returns and leaves it
    for drain()."""
    fake = await make_fake([FakeInstance(f"i-{n}") for n in range(3)])
    got: list[BatchResult[int]] = []
    async with ZecClient(fake.url, CREDS) as client:
        batcher: Batcher[int] = Batcher(lambda ids: client.start_instances(ids), linger=math.inf)
        for n in range(3):
            batcher.add(n, f"i-{n}")
        if close:
            batcher.close()
        else:
            batcher.stop()
        await batcher.run(got.append)
    assert (fake.calls["StartInstances"], len(got), batcher.pending) == (calls, 3 - left, left)
    assert len(batcher.drain()) == left
