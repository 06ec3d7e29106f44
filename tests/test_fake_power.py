"""The fake's power model: stop, image, start; hangs and forced stops; batch errors; scripts; inspect."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from batch.client import ZecClient
from batch.errors import AmbiguousError, ApiError
from batch.fake import FakeCloud, FakeConfig, FakeInstance, FakeZenlayer
from batch.fake.cli import add_arguments, build_fake
from batch.fake.fleet import fleet_from_count, fleet_from_job_list, instance_id
from batch.fake.handlers import HANDLERS
from batch.fake.power import power_refusal
from batch.fake.scripts import ACTIONS, ScriptBook

from .conftest import CREDS, FakeFactory, instances

pytestmark = pytest.mark.anyio


class Clock:
    """A server clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def _running(*ids: str) -> list[FakeInstance]:
    return instances(*ids, status="RUNNING")


async def _fake(make_fake: FakeFactory, fleet: list[FakeInstance], clock: Clock, **kwargs: Any) -> FakeZenlayer:
    cloud_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLOUD_KWARGS}
    fake: FakeZenlayer = await make_fake(fleet, cloud_kwargs={"clock": clock, **cloud_kwargs}, **kwargs)
    return fake


_CLOUD_KWARGS = {"stop_seconds", "force_stop_seconds", "boot_seconds", "batch_errors", "image_ready_seconds"}


async def _states(client: ZecClient, *ids: str) -> list[str]:
    statuses = await client.describe_instances_status(list(ids))
    return [statuses[i] for i in ids]


# ----- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "start", "forced", "code"),
    [
        pytest.param(None, False, True, "INVALID_INSTANCE_NOT_FOUND", id="stop-unknown"),
        pytest.param(None, True, False, "INVALID_INSTANCE_NOT_FOUND", id="start-unknown"),
        pytest.param("RECYCLE", False, True, "OPERATION_DENIED_INSTANCE_RECYCLED", id="stop-recycled"),
        pytest.param("RECYCLE", True, False, "OPERATION_DENIED_INSTANCE_RECYCLED", id="start-recycled"),
        pytest.param("RUNNING", False, False, None, id="graceful-stop-running"),
        pytest.param("RUNNING", False, True, None, id="forced-stop-running"),
        pytest.param("STOPPING", False, True, None, id="forced-stop-stopping"),
        pytest.param("STOPPING", False, False, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", id="graceful-stop-stopping"),
        pytest.param("STOPPED", False, True, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", id="stop-stopped"),
        pytest.param("IMAGING", False, True, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", id="stop-imaging"),
        pytest.param("BOOTING", False, True, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", id="stop-booting"),
        pytest.param("STOPPED", True, False, None, id="start-stopped"),
        pytest.param("RUNNING", True, False, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", id="start-running"),
        pytest.param("IMAGING", True, False, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", id="start-imaging"),
        pytest.param("STOPPING", True, False, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", id="start-stopping"),
    ],
)
def test_power_refusal_policy(status: str | None, start: bool, forced: bool, code: str | None) -> None:
    """Start takes STOPPED; Stop takes RUNNING, and STOPPING only when forced; each refusal has its documented code."""
    refusal = power_refusal("i-1", status, start=start, forced=forced)
    assert (refusal.code if refusal else None) == code
    if refusal is not None:
        assert refusal.status == (404 if status is None else 403)
        assert "i-1" in refusal.message


# ----- transitions on the server clock --------------------------------------------------------


async def test_stop_image_start_cycle(make_fake: FakeFactory) -> None:
    """RUNNING -> STOPPING -> STOPPED -> IMAGING -> STOPPED -> BOOTING -> RUNNING, each on the server clock."""
    clock = Clock()
    fake = await _fake(make_fake, _running("i-1"), clock, image_ready_seconds=5)
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.stop_instances(["i-1"], force_shutdown=False) == []
        assert await _states(client, "i-1") == ["STOPPING"]
        with pytest.raises(ApiError) as info:
            await client.create_image("i-1", "img-1")
        assert info.value.code == "OPERATION_DENIED_INSTANCE_IN_OPERATION"
        clock.tick(0.9375)
        assert await _states(client, "i-1") == ["STOPPING"]
        clock.tick(0.0625)
        assert await _states(client, "i-1") == ["STOPPED"]
        await client.create_image("i-1", "img-1")
        assert await _states(client, "i-1") == ["IMAGING"]
        assert await client.start_instances(["i-2", "i-1"]) == ["i-2", "i-1"]  # unknown, and IMAGING
        clock.tick(5)
        assert await _states(client, "i-1") == ["STOPPED"]
        assert await client.start_instances(["i-1"]) == []
        assert await _states(client, "i-1") == ["BOOTING"]
        clock.tick(1)
        assert await _states(client, "i-1") == ["RUNNING"]
    assert fake.inspect()["gracefulStops"] == 1


@pytest.mark.parametrize(
    ("force", "seconds", "without_field"),
    [
        pytest.param(False, 1.0, 0, id="graceful"),
        pytest.param(True, 0.2, 0, id="forced"),
        pytest.param(None, 0.2, 1, id="omitted-forces-and-is-counted"),
    ],
)
async def test_force_shutdown_field(
    make_fake: FakeFactory, force: bool | None, seconds: float, without_field: int
) -> None:
    """A forced stop (forceShutdown true, or omitted: the API default) is faster; an omitted field is counted."""
    clock = Clock()
    fake = await _fake(make_fake, _running("i-1"), clock)
    async with ZecClient(fake.url, CREDS) as client:
        await client.stop_instances(["i-1"], force_shutdown=force)
        clock.tick(seconds - 0.0625)
        assert await _states(client, "i-1") == ["STOPPING"]
        clock.tick(0.125)
        assert await _states(client, "i-1") == ["STOPPED"]
    seen = fake.inspect()
    assert seen["stopWithoutForceField"] == without_field
    assert (seen["forcedStops"], seen["gracefulStops"]) == ((0, 1) if force is False else (1, 0))


def test_forced_stop_replaces_a_slower_graceful_one_and_leaves_no_stale_change() -> None:
    """A forced stop ends a slow graceful stop early, and the graceful stop's old due time later changes nothing."""
    clock = Clock()
    cloud = FakeCloud(_running("i-1"), stop_seconds=1.0, force_stop_seconds=0.25, boot_seconds=1.0, clock=clock)
    cloud.stop_instances(["i-1"], force=False)
    clock.tick(0.125)
    cloud.stop_instances(["i-1"], force=True)
    clock.tick(0.25)
    cloud.advance()
    assert cloud.instances["i-1"].status == "STOPPED"
    cloud.start_instances(["i-1"])
    clock.tick(0.75)  # past the graceful stop's old due time (1.0 after it began)
    cloud.advance()
    assert cloud.instances["i-1"].status == "BOOTING"
    clock.tick(0.25)
    cloud.advance()
    assert cloud.instances["i-1"].status == "RUNNING"


def test_forced_stop_does_not_delay_a_graceful_stop_due_sooner() -> None:
    """A forced stop slower than the graceful stop under way leaves the sooner due time."""
    clock = Clock()
    cloud = FakeCloud(_running("i-1"), stop_seconds=0.125, force_stop_seconds=0.5, clock=clock)
    cloud.stop_instances(["i-1"], force=False)
    cloud.stop_instances(["i-1"], force=True)
    clock.tick(0.125)
    cloud.advance()
    assert cloud.instances["i-1"].status == "STOPPED"


# ----- hangs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fleet", "scripts"),
    [
        pytest.param([FakeInstance("i-1", status="RUNNING", hangs=True)], {}, id="hanging-instance"),
        pytest.param(_running("i-1"), {"StopInstances": {"i-1": ["hang"]}}, id="scripted-hang"),
    ],
)
async def test_hanging_graceful_stop_ends_only_with_a_forced_stop(
    make_fake: FakeFactory, fleet: list[FakeInstance], scripts: dict[str, Any]
) -> None:
    """A hanging graceful stop stays STOPPING; a second graceful stop is refused; a forced one stops it."""
    clock = Clock()
    fake = await _fake(make_fake, [*fleet, *_running("i-2")], clock, scripts=scripts)
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.stop_instances(["i-1", "i-2"], force_shutdown=False) == []
        clock.tick(3600)
        assert await _states(client, "i-1", "i-2") == ["STOPPING", "STOPPED"]
        assert await client.stop_instances(["i-1", "i-2"], force_shutdown=False) == ["i-1", "i-2"]
        assert await client.stop_instances(["i-1"], force_shutdown=True) == []
        clock.tick(0.25)
        assert await _states(client, "i-1") == ["STOPPED"]
    seen = fake.inspect()
    assert (seen["gracefulStops"], seen["forcedStops"]) == (2, 1)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fake-server")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_hang_fraction_is_seeded_per_instance() -> None:
    """--hang-fraction marks a seeded share of instances as hanging: the same ones for the same seed."""
    first = build_fake(_args("--instances", "1000", "--hang-fraction", "0.3", "--seed", "4")).cloud.instances
    again = build_fake(_args("--instances", "1000", "--hang-fraction", "0.3", "--seed", "4")).cloud.instances
    other = build_fake(_args("--instances", "1000", "--hang-fraction", "0.3", "--seed", "5")).cloud.instances
    hanging = {i for i, inst in first.items() if inst.hangs}
    assert 200 < len(hanging) < 400
    assert hanging == {i for i, inst in again.items() if inst.hangs}
    assert hanging != {i for i, inst in other.items() if inst.hangs}
    assert not any(inst.hangs for inst in build_fake(_args("--instances", "100")).cloud.instances.values())


# ----- batch errors -----------------------------------------------------------------------------

_MIXED = [
    FakeInstance("run", status="RUNNING"),
    FakeInstance("stopped"),
    FakeInstance("bin", status="RECYCLE"),
]


@pytest.mark.parametrize(
    ("mode", "action", "ids", "listed", "code"),
    [
        pytest.param(
            "listed",
            "StopInstances",
            ["run", "stopped", "nope", "bin"],
            ["stopped", "nope", "bin"],
            None,
            id="stop-listed",
        ),
        pytest.param(
            "listed",
            "StartInstances",
            ["stopped", "run", "nope", "bin"],
            ["run", "nope", "bin"],
            None,
            id="start-listed",
        ),
        pytest.param(
            "listed",
            "StopInstances",
            ["stopped"],
            None,
            "OPERATION_DENIED_INSTANCE_NOT_RUNNING",
            id="stop-lone-id-listed",
        ),
        pytest.param(
            "whole", "StopInstances", ["run", "stopped"], None, "OPERATION_DENIED_INSTANCE_NOT_RUNNING", id="stop-whole"
        ),
        pytest.param(
            "whole", "StopInstances", ["run", "nope", "bin"], None, "INVALID_INSTANCE_NOT_FOUND", id="stop-404"
        ),
        pytest.param(
            "whole", "StopInstances", ["run", "bin"], None, "OPERATION_DENIED_INSTANCE_RECYCLED", id="stop-recycled"
        ),
        pytest.param(
            "whole",
            "StartInstances",
            ["stopped", "run"],
            None,
            "OPERATION_DENIED_INSTANCE_NOT_STOPPED",
            id="start-whole",
        ),
        pytest.param(
            "whole",
            "StartInstances",
            ["stopped", "bin"],
            None,
            "OPERATION_DENIED_INSTANCE_RECYCLED",
            id="start-recycled",
        ),
    ],
)
async def test_batch_error_modes(
    make_fake: FakeFactory, mode: str, action: str, ids: list[str], listed: list[str] | None, code: str | None
) -> None:
    """listed: bad ids come back failed, the rest proceed; whole: the first bad id fails the call, nothing changes."""
    fake = await _fake(
        make_fake, [FakeInstance(i.instance_id, status=i.status) for i in _MIXED], Clock(), batch_errors=mode
    )
    async with ZecClient(fake.url, CREDS) as client:
        if listed is not None:
            answer = await client.call(action, {"instanceIds": ids})
            assert answer.data["instanceIds"] == listed
            good = ids[0]
            assert fake.cloud.instances[good].status == ("STOPPING" if action == "StopInstances" else "BOOTING")
        else:
            with pytest.raises(ApiError) as info:
                await client.call(action, {"instanceIds": ids})
            assert info.value.code == code
            assert info.value.status == (404 if code == "INVALID_INSTANCE_NOT_FOUND" else 403)
    if listed is None:
        assert {i: inst.status for i, inst in fake.cloud.instances.items()} == {i.instance_id: i.status for i in _MIXED}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"instanceIds": [f"i-{n}" for n in range(101)]}, "INVALID_PARAMETER_EXCEED_LENGTH", id="over-100"),
        pytest.param({"instanceIds": []}, "INVALID_PARAMETER_LESS_LENGTH", id="empty"),
        pytest.param({}, "MISSING_PARAMETER", id="missing"),
        pytest.param({"instanceIds": ["i-1", "i-1"]}, "INVALID_PARAMETER_VALUE", id="repeated-id"),
        pytest.param({"instanceIds": ["i-1"], "forceShutdown": "yes"}, "INVALID_PARAMETER_TYPE", id="force-not-bool"),
    ],
)
async def test_stop_parameter_checks(make_fake: FakeFactory, params: dict[str, Any], code: str) -> None:
    """StopInstances refuses more than 100 ids, no ids, a repeated id and a forceShutdown that is not a boolean."""
    fake = await _fake(make_fake, _running("i-1"), Clock())
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.call("StopInstances", params)
    assert (info.value.code, info.value.status) == (code, 400)
    assert fake.cloud.instances["i-1"].status == "RUNNING"


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        pytest.param("RECYCLE", "OPERATION_FAILED_FOR_RECYCLE_RESOURCE", 403, id="recycled"),
        pytest.param("RUNNING", "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT", 400, id="running"),
        pytest.param("STOPPING", "OPERATION_DENIED_INSTANCE_IN_OPERATION", 400, id="stopping"),
        pytest.param("BOOTING", "OPERATION_DENIED_INSTANCE_IN_OPERATION", 400, id="booting"),
    ],
)
async def test_create_image_needs_a_stopped_instance(make_fake: FakeFactory, status: str, code: str, http: int) -> None:
    """CreateImage refuses a recycled, running or transitional instance with the code for each."""
    fake = await _fake(make_fake, [FakeInstance("i-1", status=status)], Clock())
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.create_image("i-1", "img-1")
    assert (info.value.code, info.value.status) == (code, http)
    assert fake.cloud.images == {}


# ----- scripts ----------------------------------------------------------------------------------


async def test_scripted_start_failures_then_success(make_fake: FakeFactory) -> None:
    """A StartInstances script ["fail", "fail", "ok"] lists the id as failed twice, then starts it."""
    clock = Clock()
    fake = await _fake(make_fake, instances("i-3", "i-4"), clock, scripts={"StartInstances": {"i-3": ["fail", "fail"]}})
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.start_instances(["i-3", "i-4"]) == ["i-3"]
        assert await _states(client, "i-3", "i-4") == ["STOPPED", "BOOTING"]
        assert await client.start_instances(["i-3"]) == ["i-3"]
        assert await client.start_instances(["i-3"]) == []
        assert await _states(client, "i-3") == ["BOOTING"]


async def test_scripted_lost_stop_is_applied(make_fake: FakeFactory) -> None:
    """A lost StopInstances answer: the stop happened, the client sees a write that may have committed."""
    fake = await _fake(make_fake, _running("i-4"), Clock(), scripts={"StopInstances": {"i-4": ["lost"]}})
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(AmbiguousError):
            await client.stop_instances(["i-4"], force_shutdown=False)
        assert await _states(client, "i-4") == ["STOPPING"]
    seen = fake.inspect()
    assert (seen["lostResponses"], seen["stoppedNow"]) == (1, 1)


@pytest.mark.parametrize(
    ("outcome", "code", "applied"),
    [
        pytest.param("503", "SERVICE_TEMPORARY_UNAVAILABLE", False, id="503-not-applied"),
        pytest.param("504", "REQUEST_TIMED_OUT", True, id="504-applied"),
        pytest.param("busy", "OPERATION_DENIED_INSTANCE_IN_OPERATION", False, id="busy"),
        pytest.param("429", "REQUEST_LIMIT_EXCEEDED", False, id="429"),
    ],
)
async def test_scripted_call_errors_for_start(make_fake: FakeFactory, outcome: str, code: str, applied: bool) -> None:
    """Scripted whole-call errors answer StartInstances with their code; only a 504 has done the work."""
    fake = await _fake(make_fake, instances("i-1"), Clock(), scripts={"StartInstances": {"i-1": [outcome]}})
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.start_instances(["i-1"])
        assert info.value.code == code
        assert await _states(client, "i-1") == ["BOOTING" if applied else "STOPPED"]


async def test_any_id_script_and_old_form(make_fake: FakeFactory) -> None:
    """The id '*' scripts every call of an action; an id mapped to a list still scripts CreateImage."""
    scripts = {"DescribeInstancesStatus": {"*": ["503"]}, "i-1": ["busy"]}
    fake = await _fake(make_fake, instances("i-1"), Clock(), scripts=scripts)
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.describe_instances_status(["i-1"])
        assert info.value.code == "SERVICE_TEMPORARY_UNAVAILABLE"
        assert await _states(client, "i-1") == ["STOPPED"]
        with pytest.raises(ApiError) as info:
            await client.create_image("i-1", "img-1")
        assert info.value.code == "OPERATION_DENIED_INSTANCE_IN_OPERATION"
        await client.create_image("i-1", "img-1")


def test_scripts_take_one_outcome_per_named_id() -> None:
    """Each scripted id named by a call uses up one outcome; the first whole-call outcome is the call's."""
    book = ScriptBook({"StopInstances": {"a": ["fail", "ok"], "b": ["503", "lost"], "c": ["hang"]}})
    first = book.take("StopInstances", {"instanceIds": ["c", "a", "b", "d"]})
    assert (first.call, first.failing, first.hanging) == ("503", {"a"}, {"c"})
    second = book.take("StopInstances", {"instanceIds": ["a", "b", "c"]})
    assert (second.call, second.failing, second.hanging) == ("lost", frozenset(), frozenset())
    assert book.take("StartInstances", {"instanceIds": ["a"]}).call == "ok"


@pytest.mark.parametrize(
    ("scripts", "needle"),
    [
        pytest.param({"Reboot": {"i-1": ["ok"]}}, "'Reboot': not an action of the fake", id="unknown-action"),
        pytest.param({"StopInstances": {"i-1": ["sulk"]}}, "unknown outcome 'sulk'", id="unknown-outcome"),
        pytest.param({"i-1": ["fail"]}, "outcome 'fail' is only for DeleteImages, StartInstances", id="fail-create"),
        pytest.param(
            {"StartInstances": {"i-1": ["hang"]}}, "outcome 'hang' is only for StopInstances", id="hang-start"
        ),
        pytest.param({"StopInstances": {"i-1": "hang"}}, "must be a list of outcomes, not str", id="not-a-list"),
    ],
)
def test_bad_scripts_are_refused(scripts: dict[str, Any], needle: str) -> None:
    """A script the fake cannot follow is a ValueError naming the action, id and outcome."""
    with pytest.raises(ValueError, match="script for") as info:
        FakeZenlayer(FakeCloud(), FakeConfig(scripts=scripts))
    assert needle in str(info.value)


def test_scriptable_actions_are_the_served_actions() -> None:
    """The scripts know exactly the actions the fake serves."""
    assert set(ACTIONS) == set(HANDLERS)


# ----- inspect ----------------------------------------------------------------------------------


async def test_inspect_counts_peak_stopped(make_fake: FakeFactory) -> None:
    """peakStopped counts instances RUNNING at the start from an accepted stop until RUNNING again."""
    clock = Clock()
    fleet = [*_running("a", "b", "c", "d", "e"), FakeInstance("x")]
    fake = await _fake(make_fake, fleet, clock)
    async with ZecClient(fake.url, CREDS) as client:
        await client.stop_instances(["a", "b"], force_shutdown=True)
        clock.tick(0.25)
        await client.start_instances(["a", "x"])
        await client.stop_instances(["c"], force_shutdown=False)  # a (booting), b, c down: 3
        clock.tick(1)  # a and x RUNNING, c STOPPED
        await client.stop_instances(["d", "x"], force_shutdown=True)  # b, c, d down (x was not RUNNING at start)
        assert await client.stop_instances(["e", "nope"], force_shutdown=False) == ["nope"]
        assert fake.inspect()["peakStopped"] == 4
        await client.start_instances(["b"])
        clock.tick(1)
    seen = fake.inspect()
    assert seen["peakStopped"] == 4
    assert seen["stoppedNow"] == 3
    assert seen["notRunningAnymore"] == ["c", "d", "e"]
    assert seen["instanceStates"] == {
        "a": "RUNNING",
        "b": "RUNNING",
        "c": "STOPPED",
        "d": "STOPPED",
        "e": "STOPPED",
        "x": "STOPPED",
    }
    assert (seen["forcedStops"], seen["gracefulStops"], seen["startsAccepted"]) == (4, 2, 3)
    assert seen["calls"]["StopInstances"] == 4


# ----- DescribeInstances ------------------------------------------------------------------------

_TAGGED = [
    FakeInstance("i-1", status="RUNNING", tags=[{"key": "env", "value": "prod"}, {"key": "team", "value": "a"}]),
    FakeInstance("i-2", tags=[{"key": "env", "value": "prod"}], zone_id="FRA-A", resource_group_id="rg-2"),
    FakeInstance("i-3", name="web-3", tags=[{"key": "env", "value": "dev"}]),
]


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        pytest.param({}, ["i-1", "i-2", "i-3"], id="all"),
        pytest.param({"instanceIds": ["i-3", "i-1", "i-9"]}, ["i-3", "i-1"], id="ids"),
        pytest.param({"status": "RUNNING"}, ["i-1"], id="status"),
        pytest.param({"zoneId": "FRA-A"}, ["i-2"], id="zone"),
        pytest.param({"resourceGroupId": "rg-2"}, ["i-2"], id="group"),
        pytest.param({"tags": [{"key": "env", "value": "prod"}]}, ["i-1", "i-2"], id="tag"),
        pytest.param(
            {"tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "a"}]}, ["i-1"], id="tags-and"
        ),
        pytest.param({"tagKeys": ["team"]}, ["i-1"], id="tag-keys"),
        pytest.param({"name": "web"}, ["i-3"], id="name-fuzzy"),
        pytest.param({"pageSize": 2, "pageNum": 2}, ["i-3"], id="page-2"),
    ],
)
async def test_describe_instances_filters(make_fake: FakeFactory, params: dict[str, Any], ids: list[str]) -> None:
    """DescribeInstances applies every filter given (AND) and pages; status is in 'status'."""
    fake = await _fake(make_fake, _TAGGED, Clock())
    async with ZecClient(fake.url, CREDS) as client:
        answer = await client.call("DescribeInstances", params)
    assert [i["instanceId"] for i in answer.data["dataSet"]] == ids
    first = answer.data["dataSet"][0]
    assert set(first) >= {"instanceId", "instanceName", "zoneId", "status", "resourceGroupId", "tags"}
    assert isinstance(first["tags"]["tags"], list)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"pageSize": 1001}, "INVALID_PARAMETER_EXCEED_MAXIMUM", id="page-too-big"),
        pytest.param({"pageNum": 0}, "INVALID_PARAMETER_LESS_MINIMUM", id="page-zero"),
        pytest.param({"instanceIds": [str(n) for n in range(101)]}, "INVALID_PARAMETER_EXCEED_LENGTH", id="ids"),
        pytest.param({"tags": {"tags": []}}, "INVALID_PARAMETER_TYPE", id="wrapped-tags"),
    ],
)
async def test_describe_instances_parameter_checks(make_fake: FakeFactory, params: dict[str, Any], code: str) -> None:
    """DescribeInstances refuses pages out of 1..1000, over 100 ids, and tags wrapped as on input."""
    fake = await _fake(make_fake, _TAGGED, Clock())
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.call("DescribeInstances", params)
    assert info.value.code == code


async def test_describe_instances_status_empty_is_a_page_of_all(make_fake: FakeFactory) -> None:
    """DescribeInstancesStatus without ids answers one page of all instances, in 'instanceStatus'."""
    fake = await _fake(make_fake, _TAGGED, Clock())
    async with ZecClient(fake.url, CREDS) as client:
        answer = await client.call("DescribeInstancesStatus", {"pageSize": 2})
    assert answer.data["totalCount"] == 3
    assert answer.data["dataSet"] == [
        {"instanceId": "i-1", "instanceStatus": "RUNNING"},
        {"instanceId": "i-2", "instanceStatus": "STOPPED"},
    ]


# ----- fleet and flags --------------------------------------------------------------------------


def test_running_fraction_keeps_the_other_draws() -> None:
    """--running-fraction makes a seeded share RUNNING and leaves which instances are busy or GPU unchanged."""
    plain = fleet_from_count(500, busy_fraction=0.3, busy_max_seconds=5, gpu_fraction=0.1, seed=2)
    mixed = fleet_from_count(500, busy_fraction=0.3, busy_max_seconds=5, gpu_fraction=0.1, running_fraction=0.5, seed=2)
    assert [(i.busy_until, i.gpu) for i in plain] == [(i.busy_until, i.gpu) for i in mixed]
    running = sum(i.status == "RUNNING" for i in mixed)
    assert 200 < running < 300
    assert {i.status for i in plain} == {"STOPPED"}


def test_fleet_reads_recycle_and_hangs(tmp_path: Path) -> None:
    """A job list's fakeStatus RECYCLE and fakeHangs columns reach the fleet."""
    path = tmp_path / "fleet.csv"
    path.write_text("instanceId,fakeStatus,fakeHangs\n1,RECYCLE,\n2,running,yes\n3,,\n")
    fleet = {i.instance_id: i for i in fleet_from_job_list(path)}
    assert [(fleet[i].status, fleet[i].hangs) for i in "123"] == [
        ("RECYCLE", False),
        ("RUNNING", True),
        ("STOPPED", False),
    ]


def test_power_flags_reach_the_fake() -> None:
    """The power flags set the cloud's times, batch-error mode and scripts; --transition-seconds is the default time."""
    fake = build_fake(
        _args(
            "--instances", "3", "--running-fraction", "1", "--stop-seconds", "2", "--boot-seconds", "3",
            "--batch-errors", "whole", "--script", f"StopInstances:{instance_id(2)}:fail,ok",
            "--script", f"StopInstances:{instance_id(2)}:hang", "--script", "DescribeInstancesStatus:*:503",
        )
    )  # fmt: skip
    cloud = fake.cloud
    assert (cloud.stop_seconds, cloud.force_stop_seconds, cloud.boot_seconds) == (2, 0.2, 3)
    assert cloud.batch_errors == "whole"
    assert {i.status for i in cloud.instances.values()} == {"RUNNING"}
    steps = [fake._scripts.take("StopInstances", {"instanceIds": [instance_id(2)]}) for _ in range(3)]
    assert [(t.call, sorted(t.failing), sorted(t.hanging)) for t in steps] == [
        ("ok", [instance_id(2)], []),
        ("ok", [], []),
        ("ok", [], [instance_id(2)]),
    ]
    assert fake._scripts.take("DescribeInstancesStatus", {}).call == "503"
    short = build_fake(_args("--transition-seconds", "0.5", "--force-stop-seconds", "0.1")).cloud
    assert (short.stop_seconds, short.force_stop_seconds, short.boot_seconds, short.transition_seconds) == (
        0.5,
        0.1,
        0.5,
        0.5,
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--stop-seconds", "-1"], "argument --stop-seconds: '-1' must be zero or more", id="stop"),
        pytest.param(["--force-stop-seconds", "nan"], "argument --force-stop-seconds: 'nan' is not a finite", id="f"),
        pytest.param(["--boot-seconds", "soon"], "argument --boot-seconds: 'soon' is not a number", id="boot"),
        pytest.param(["--hang-fraction", "1.5"], "argument --hang-fraction: '1.5' must be between 0 and 1", id="hang"),
        pytest.param(["--running-fraction", "-0.1"], "argument --running-fraction: '-0.1' must be zero", id="running"),
        pytest.param(["--batch-errors", "some"], "argument --batch-errors: invalid choice: 'some'", id="batch-errors"),
        pytest.param(["--script", "StopInstances"], "argument --script: 'StopInstances' is not ACTION:ID:", id="form"),
        pytest.param(["--script", "Reboot:i-1:ok"], "argument --script: script for 'Reboot': not an action", id="act"),
        pytest.param(["--script", "StopInstances:i-1:sulk"], "unknown outcome 'sulk'", id="outcome"),
        pytest.param(["--script", "StartInstances:i-1:hang"], "outcome 'hang' is only for StopInstances", id="hang-on"),
        pytest.param(["--script", "CreateImage:i-1:ok,fail"], "outcome 'fail' is only for DeleteImages", id="fail-on"),
    ],
)
def test_bad_power_flags_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad power or script flag is an argparse error naming the flag: exit 2, no traceback."""
    from batch.cli import main

    with pytest.raises(SystemExit) as info:
        main(["fake-server", *argv])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert needle in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


async def test_built_fake_serves_the_cycle_with_whole_batch_errors() -> None:
    """A fake built from flags (--running-fraction 1, --batch-errors whole, a scripted fail) serves Stop and Start."""
    fake = build_fake(
        _args("--instances", "3", "--running-fraction", "1", "--batch-errors", "whole",
              "--force-stop-seconds", "0", "--boot-seconds", "0", "--script", f"StopInstances:{instance_id(3)}:fail")
    )  # fmt: skip
    ids = [instance_id(n) for n in (1, 2, 3)]
    async with fake, ZecClient(fake.url, CREDS) as client:
        assert await client.stop_instances(ids, force_shutdown=True) == [ids[2]]
        assert await _states(client, *ids) == ["STOPPED", "STOPPED", "RUNNING"]
        with pytest.raises(ApiError) as info:
            await client.start_instances(ids)
        assert info.value.code == "OPERATION_DENIED_INSTANCE_NOT_STOPPED"
        assert await client.start_instances(ids[:2]) == []
        assert await _states(client, *ids) == ["RUNNING", "RUNNING", "RUNNING"]
    seen = fake.inspect()
    assert (seen["peakStopped"], seen["stoppedNow"], seen["notRunningAnymore"]) == (2, 0, [])
