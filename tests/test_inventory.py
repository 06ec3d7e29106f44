"""imagebatch inventory and run --select's resolution: DescribeInstances over HTTP to the fake."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import anyio
import pytest

from batch.cli import main
from batch.client import ZecClient
from batch.errors import TransientServerError, UsageError
from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeInstance
from batch.inventory import Instance, list_instances, resolve_selection, write_job_list
from batch.selection import GroupBy, Selection, build_selection, parse_group_by, parse_selectors
from batch.sources import JobList

from .conftest import CREDS, FakeFactory

pytestmark = pytest.mark.anyio


def _fleet() -> list[FakeInstance]:
    """Six instances over two zones, two resource groups, two states and a few tags."""

    def tags(**pairs: str) -> list[dict[str, str]]:
        return [{"key": k, "value": v} for k, v in pairs.items()]

    return [
        FakeInstance("101", zone_id="SEL-A", name="web-1", tags=tags(backup="nightly", team="web")),
        FakeInstance("102", zone_id="SEL-A", name="web-2", status="RUNNING", tags=tags(backup="nightly")),
        FakeInstance("103", zone_id="SEL-B", name="db-1", resource_group_id="rg-db", tags=tags(backup="nightly")),
        FakeInstance("104", zone_id="SEL-B", name="db-2", resource_group_id="rg-db", status="RUNNING"),
        FakeInstance("105", zone_id="FRA-A", name="cache", tags=tags(backup="weekly", team="web")),
        FakeInstance("106", zone_id="FRA-A", name="tmp", status="BOOTING"),
    ]


@pytest.fixture
def creds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's key pair in the zeno CLI variables."""
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID)
    monkeypatch.setenv("ZENLAYER_ACCESS_KEY_SECRET", DEFAULT_ACCESS_KEY_SECRET)


async def _cli(*argv: str) -> int:
    """``imagebatch ...`` in a worker thread (it runs its own event loop; the fake runs in ours)."""
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_inventory_writes_a_job_list_that_validates(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inventory -o fleet.csv writes id, resource group, zone as group and tags; validate accepts it."""
    fake = await make_fake(_fleet())
    out = tmp_path / "fleet.csv"
    argv = ["inventory", "--tag", "backup=nightly", "--with-tags", "-o", str(out), "--endpoint", fake.url]
    assert await _cli(*argv) == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"instanceId": "101", "resourceGroupId": "rg-default", "group": "SEL-A", "tags": "backup=nightly;team=web"},
        {"instanceId": "102", "resourceGroupId": "rg-default", "group": "SEL-A", "tags": "backup=nightly"},
        {"instanceId": "103", "resourceGroupId": "rg-db", "group": "SEL-B", "tags": "backup=nightly"},
    ]
    assert "fleet.csv: 3 instances (1 API calls)" in capsys.readouterr().out
    assert await _cli("validate", str(out)) == 0
    assert "3 jobs, no problems" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param([], ["101", "102", "103", "104", "105", "106"], id="everything"),
        pytest.param(["--zone", "SEL-A", "--zone", "FRA-A"], ["101", "102", "105", "106"], id="zones-any-of"),
        pytest.param(["--tag", "backup=nightly", "--tag", "team=web"], ["101"], id="tags-all-of"),
        pytest.param(["--status", "RUNNING,STOPPED", "--zone", "SEL-B"], ["103", "104"], id="states-in-a-zone"),
        pytest.param(["--status", "running"], ["102", "104"], id="state-any-case"),
        pytest.param(["--resource-group", "rg-db", "--status", "RUNNING"], ["104"], id="group-and-state"),
    ],
)
async def test_inventory_filters(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, flags: list[str], expected: list[str]
) -> None:
    """Zones, groups and states select any of their values; tags select instances holding all."""
    fake = await make_fake(_fleet())
    out = tmp_path / "fleet.jsonl"
    assert await _cli("inventory", *flags, "-o", str(out), "--endpoint", fake.url) == 0
    assert [json.loads(line)["instanceId"] for line in out.read_text().splitlines()] == expected


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        pytest.param("zone", ["SEL-A", "SEL-A", "SEL-B", "SEL-B", "FRA-A", "FRA-A"], id="zone"),
        pytest.param(
            "resource-group", ["rg-default", "rg-default", "rg-db", "rg-db", "rg-default", "rg-default"], id="group"
        ),
        pytest.param("tag:team", ["web", "", "", "", "web", ""], id="tag"),
    ],
)
async def test_group_column_follows_group_by(
    make_fake: FakeFactory, tmp_path: Path, group_by: str, expected: list[str]
) -> None:
    """--group-by fills the group column from the zone, the resource group or a tag (blank without it)."""
    fake = await make_fake(_fleet())
    async with ZecClient(fake.url, CREDS) as client:
        listing = await list_instances(client, Selection())
    out = tmp_path / "fleet.csv"
    write_job_list(listing.instances, out, group_by=parse_group_by(group_by))
    with out.open(newline="") as handle:
        assert [row["group"] for row in csv.DictReader(handle)] == expected
    assert JobList(out).validate().ok


async def test_ten_thousand_instances_take_at_most_eleven_calls(make_fake: FakeFactory, tmp_path: Path) -> None:
    """10,000 instances in two states are listed in 11 DescribeInstances calls, each once."""
    # 4,999 + 5,001: the worst split of two states (5 + 6 pages of 1,000)
    fake = await make_fake(
        [FakeInstance(str(10**18 + n), status="RUNNING" if n < 4_999 else "STOPPED") for n in range(10_000)]
    )
    async with ZecClient(fake.url, CREDS) as client:
        listing = await list_instances(client, build_selection(states=[("RUNNING,STOPPED", "--status")]))
    assert len(listing.instances) == 10_000
    assert len({i.instance_id for i in listing.instances}) == 10_000
    assert fake.calls["DescribeInstances"] == listing.calls <= 11
    out = tmp_path / "fleet.csv"
    write_job_list(listing.instances, out)
    assert JobList(out).validate().jobs == 10_000


async def test_a_failing_page_is_asked_again_alone(make_fake: FakeFactory) -> None:
    """A 503 on a page costs one more call for that page, not a new listing."""
    fleet = [FakeInstance(str(n)) for n in range(1, 26)]
    fake = await make_fake(fleet, scripts={"DescribeInstances": {"*": ["ok", "503", "ok"]}})
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    async with ZecClient(fake.url, CREDS) as client:
        listing = await list_instances(client, Selection(), page_size=10, backoff_base=0.01, sleep=record)
    assert [i.instance_id for i in listing.instances] == sorted(str(n) for n in range(1, 26))
    assert fake.calls["DescribeInstances"] == listing.calls == 4
    assert len(waits) == 1


async def test_listing_gives_up_after_its_attempts(make_fake: FakeFactory) -> None:
    """A page that keeps failing ends the listing with the API's error after the attempts allowed."""
    fake = await make_fake([FakeInstance("1")], scripts={"DescribeInstances": {"*": ["503"] * 5}})

    async def no_wait(_seconds: float) -> None:
        return

    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(TransientServerError):
            await list_instances(client, Selection(), attempts=3, sleep=no_wait)
    assert fake.calls["DescribeInstances"] == 3


async def test_resolve_selection_reads_selectors(make_fake: FakeFactory) -> None:
    """--select tag:backup=nightly --select zone:SEL-A picks the nightly instances of SEL-A."""
    fake = await make_fake(_fleet())
    async with ZecClient(fake.url, CREDS) as client:
        found = await resolve_selection(client, ["tag:backup=nightly", "zone:SEL-A"])
        with pytest.raises(UsageError, match=r"no instance matches --select 'zone:NOWHERE'"):
            await resolve_selection(client, ["zone:NOWHERE"])
    assert [(i.instance_id, i.name, i.zone_id) for i in found] == [("101", "web-1", "SEL-A"), ("102", "web-2", "SEL-A")]


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        pytest.param(["tag:backup=nightly"], Selection(tags=(("backup", "nightly"),)), id="tag"),
        pytest.param(["tag:k=a=b"], Selection(tags=(("k", "a=b"),)), id="tag-value-with-equals"),
        pytest.param(["zone:SEL-A", "zone:FRA-A"], Selection(zones=("SEL-A", "FRA-A")), id="two-zones"),
        pytest.param(["zone:SEL-A", "zone:SEL-A"], Selection(zones=("SEL-A",)), id="zone-twice-once"),
        pytest.param(["resource-group:rg-1"], Selection(resource_groups=("rg-1",)), id="resource-group"),
        pytest.param(["status:running,Stopped"], Selection(states=("RUNNING", "STOPPED")), id="states"),
    ],
)
def test_selectors_parse(selectors: list[str], expected: Selection) -> None:
    """Each selector form becomes its filter."""
    assert parse_selectors(selectors) == expected


@pytest.mark.parametrize(
    ("selectors", "message"),
    [
        pytest.param(["backup=nightly"], "--select 'backup=nightly': expected tag:KEY=VALUE", id="no-kind"),
        pytest.param(["region:SEL"], "--select 'region:SEL': expected tag:KEY=VALUE", id="unknown-kind"),
        pytest.param(["tag:backup"], "--select 'tag:backup': 'backup' is not KEY=VALUE", id="tag-without-value"),
        pytest.param(["tag:=x"], "tag keys and values are 1-64 characters", id="empty-key"),
        pytest.param(["zone:"], "--select 'zone:': the zone is empty", id="empty-zone"),
        pytest.param(["status:ASLEEP"], "'ASLEEP' is not an instance state", id="unknown-state"),
        pytest.param(["tag:a=1", "tag:a=2"], "tag 'a' is also asked to be '1'", id="one-key-two-values"),
        pytest.param([f"tag:k{n}=v" for n in range(21)], "at most 20 tags a call", id="too-many-tags"),
    ],
)
def test_bad_selectors_are_clear_errors(selectors: list[str], message: str) -> None:
    """A malformed selector is a UsageError naming it and what is wrong."""
    with pytest.raises(UsageError) as info:
        parse_selectors(selectors)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("zone", GroupBy("zone"), id="zone"),
        pytest.param("resource-group", GroupBy("resource-group"), id="resource-group"),
        pytest.param("tag:team", GroupBy("tag", "team"), id="tag"),
    ],
)
def test_group_by_parses(text: str, expected: GroupBy) -> None:
    """--group-by takes zone, resource-group or tag:KEY."""
    assert parse_group_by(text) == expected


async def test_more_than_twenty_tags_exit_2_before_any_call(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """21 --tag flags: exit 2, a message naming the limit, and no API call."""
    fake = await make_fake(_fleet())
    tags = [arg for n in range(21) for arg in ("--tag", f"k{n}=v")]
    assert await _cli("inventory", *tags, "-o", str(tmp_path / "f.csv"), "--endpoint", fake.url) == 2
    err = capsys.readouterr().err
    assert "21 tags given; the API filters on at most 20 tags a call" in err
    assert "Traceback" not in err
    assert fake.calls["DescribeInstances"] == 0


async def test_no_match_exits_1_and_writes_nothing(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No instance matches: exit 1, a message, and no file."""
    fake = await make_fake(_fleet())
    out = tmp_path / "fleet.csv"
    assert await _cli("inventory", "--zone", "NOWHERE", "-o", str(out), "--endpoint", fake.url) == 1
    assert "no instance matches" in capsys.readouterr().err
    assert not out.exists()


async def test_failed_listing_leaves_the_old_list(
    make_fake: FakeFactory, creds_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API refusing the listing: exit 3 with its code, and yesterday's list untouched."""
    fake = await make_fake(_fleet(), access_key_secret="another-secret")
    out = tmp_path / "fleet.csv"
    out.write_text("instanceId\n1\n")
    assert await _cli("inventory", "-o", str(out), "--endpoint", fake.url) == 3
    assert "AUTHFAILURE_SIGNATURE_FAILURE" in capsys.readouterr().err
    assert out.read_text() == "instanceId\n1\n"
    assert os.listdir(tmp_path) == ["fleet.csv"]  # no temporary file left behind


def _odd_tags() -> list[Instance]:
    """One instance whose tag key holds the CSV tags column's separator."""
    return [Instance("7", "n", "SEL-A", "rg", "STOPPED", tags=(("a;b", "1"),))]


def test_tags_a_csv_cannot_hold_are_an_error_suggesting_json(tmp_path: Path) -> None:
    """A tag key with ';' cannot go into the CSV tags column: a clear error; JSON Lines holds it."""
    with pytest.raises(UsageError, match=r"instance 7: tag 'a;b'='1' cannot be written in a CSV job list"):
        write_job_list(_odd_tags(), tmp_path / "fleet.csv", with_tags=True)
    assert list(tmp_path.iterdir()) == []
    write_job_list(_odd_tags(), tmp_path / "fleet.jsonl", with_tags=True)
    assert json.loads((tmp_path / "fleet.jsonl").read_text())["tags"] == [{"key": "a;b", "value": "1"}]
    assert JobList(tmp_path / "fleet.jsonl").validate().ok


async def test_json_list_validates(make_fake: FakeFactory, tmp_path: Path) -> None:
    """A .json list (one job a line in an array) passes the project's reader, tags included."""
    fake = await make_fake(_fleet())
    async with ZecClient(fake.url, CREDS) as client:
        listing = await list_instances(client, Selection())
    out = tmp_path / "fleet.json"
    write_job_list(listing.instances, out, with_tags=True)
    jobs = list(JobList(out))
    assert [j.instance_id for j in jobs] == ["101", "102", "103", "104", "105", "106"]
    assert jobs[0].tags == (("backup", "nightly"), ("team", "web"))
    assert jobs[0].group == "SEL-A"
