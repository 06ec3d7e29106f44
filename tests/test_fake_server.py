"""The fake Zenlayer server: signature checks, state, faults, inspection, and its command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, FakeCloud, FakeInstance
from batch.fake.fleet import fleet_from_job_list
from batch.signing import sign

from .conftest import FakeFactory, instances

pytestmark = pytest.mark.anyio


def _signed_headers(
    url: str,
    body: bytes,
    *,
    secret: str = DEFAULT_ACCESS_KEY_SECRET,
    timestamp: int | None = None,
    action: str = "CreateImage",
) -> dict[str, str]:
    host = url.removeprefix("http://")
    ts = int(time.time()) if timestamp is None else timestamp
    sig = sign(
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        secret=secret,
        method="POST",
        content_type="application/json",
        host=host,
        timestamp=ts,
        body=body,
    )
    return {
        "Content-Type": "application/json",
        "Host": host,
        "X-ZC-Action": action,
        "X-ZC-Version": "2025-09-01",
        "X-ZC-Timestamp": str(ts),
        "X-ZC-Signature-Method": "ZC2-HMAC-SHA256",
        "Authorization": sig.authorization,
    }


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v2/zec", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


BODY = b'{"instanceId":"i-1","imageName":"img-1"}'


async def test_signed_request_is_accepted(make_fake: FakeFactory) -> None:
    """A request signed over exactly what is sent is accepted; SDK-style spaced JSON too."""
    fake = await make_fake(instances("i-1", "i-2"))
    status, doc = await _post(fake.url, BODY, _signed_headers(fake.url, BODY))
    assert status == 200
    assert doc["response"]["imageName"] == "img-1"
    spaced = b'{"instanceId": "i-2", "imageName": "img-2"}'
    status, _ = await _post(fake.url, spaced, _signed_headers(fake.url, spaced))
    assert status == 200


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        pytest.param("body", "AUTHFAILURE_SIGNATURE_FAILURE", id="tampered-body"),
        pytest.param("secret", "AUTHFAILURE_SIGNATURE_FAILURE", id="wrong-secret"),
        pytest.param("stale", "AUTHFAILURE_SIGNATURE_EXPIRED", id="stale-timestamp"),
        pytest.param("future", "AUTHFAILURE_SIGNATURE_EXPIRED", id="future-timestamp"),
        pytest.param("content-type", "AUTHFAILURE_SIGNATURE_FAILURE", id="content-type-changed"),
        pytest.param("no-auth", "AUTHFAILURE_INVALID_AUTHORIZATION", id="no-authorization"),
        pytest.param("garbled-auth", "AUTHFAILURE_INVALID_AUTHORIZATION", id="garbled-authorization"),
    ],
)
async def test_bad_signatures_are_rejected(make_fake: FakeFactory, tamper: str, code: str) -> None:
    """Each kind of tampering is refused with its documented code, and nothing is created."""
    fake = await make_fake(instances("i-1"))
    body, headers = BODY, _signed_headers(fake.url, BODY)
    if tamper == "body":
        body = BODY.replace(b"img-1", b"img-2")
    elif tamper == "secret":
        headers = _signed_headers(fake.url, BODY, secret="not-the-secret")
    elif tamper == "stale":
        headers = _signed_headers(fake.url, BODY, timestamp=int(time.time()) - 301)
    elif tamper == "future":
        headers = _signed_headers(fake.url, BODY, timestamp=int(time.time()) + 400)
    elif tamper == "content-type":
        headers["Content-Type"] = "application/json; charset=utf-8"
    elif tamper == "no-auth":
        del headers["Authorization"]
    elif tamper == "garbled-auth":
        headers["Authorization"] = "ZC2-HMAC-SHA256 Credential=x"
    status, doc = await _post(fake.url, body, headers)
    assert (status, doc["code"]) == (401, code)
    assert doc["requestId"].startswith("T")
    assert fake.cloud.images == {}


async def test_unknown_action_and_wrong_version(make_fake: FakeFactory) -> None:
    """An action zec does not have is AUTHFAILURE_UNAUTHORIZED_OPERATION; a wrong version is a 400."""
    fake = await make_fake(instances("i-1"))
    status, doc = await _post(fake.url, b"{}", _signed_headers(fake.url, b"{}", action="RebootEverything"))
    assert (status, doc["code"]) == (403, "AUTHFAILURE_UNAUTHORIZED_OPERATION")
    headers = _signed_headers(fake.url, b"{}", action="DescribeCustomImages")
    headers["X-ZC-Version"] = "2024-04-01"
    status, doc = await _post(fake.url, b"{}", headers)
    assert status == 400


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{}", "MISSING_PARAMETER", id="missing"),
        pytest.param(b'{"instanceId": 5, "imageName": "ab"}', "INVALID_PARAMETER_TYPE", id="type"),
        pytest.param(b'{"instanceId": "i-1", "imageName": "a"}', "INVALID_PARAMETER_LESS_LENGTH", id="short"),
        pytest.param(
            b'{"instanceId": "i-1", "imageName": "ab", "tags": {"tags": [{"key": "k", "value": "1"},'
            b' {"key": "k", "value": "2"}]}}',
            "INVALID_PARAMETER_VALUE",
            id="dup-tag",
        ),
        pytest.param(b"[]", "INVALID_PARAMETER_TYPE", id="not-object"),
    ],
)
async def test_create_image_parameter_checks(make_fake: FakeFactory, body: bytes, code: str) -> None:
    """CreateImage parameters are checked as the API documents, with 400 codes."""
    fake = await make_fake(instances("i-1"))
    status, doc = await _post(fake.url, body, _signed_headers(fake.url, body))
    assert (status, doc["code"]) == (400, code)


def test_image_lifecycle_and_busy_instance() -> None:
    """The instance is IMAGING (busy) while its image is CREATING, then STOPPED; the image AVAILABLE or FAILED."""
    now = [100.0]
    cloud = FakeCloud(instances("i-1", "i-2"), image_ready_seconds=5, failed_images={"i-2"}, clock=lambda: now[0])
    image = cloud.create_image("i-1", "img-1", None, [])
    assert cloud.instances["i-1"].status == "IMAGING"
    with pytest.raises(Exception, match="in another operation"):
        cloud.check_create_image("i-1")
    now[0] += 5
    cloud.advance()
    assert (image.status, cloud.instances["i-1"].status) == ("AVAILABLE", "STOPPED")
    bad = cloud.create_image("i-2", "img-2", None, [])
    now[0] += 5
    cloud.advance()
    assert bad.status == "FAILED"


def test_busy_window_is_relative_to_start() -> None:
    """An instance busy for 3 s answers IN_OPERATION until then, and is free after."""
    now = [50.0]
    cloud = FakeCloud([FakeInstance("i-1", busy_until=3)], clock=lambda: now[0])
    with pytest.raises(Exception, match="in another operation"):
        cloud.check_create_image("i-1")
    now[0] += 3.01
    assert cloud.check_create_image("i-1").instance_id == "i-1"


async def test_inspection_endpoint(make_fake: FakeFactory) -> None:
    """GET /_fake/inspect shows calls per action and code, and images per instance."""
    fake = await make_fake(instances("i-1"))
    await _post(fake.url, BODY, _signed_headers(fake.url, BODY))
    await _post(fake.url, BODY, _signed_headers(fake.url, BODY))  # busy now: IMAGING
    async with aiohttp.ClientSession() as session, session.get(f"{fake.url}/_fake/inspect") as resp:
        doc = await resp.json()
    assert doc["calls"] == {"CreateImage": 2}
    assert doc["codes"] == {"OK": 1, "OPERATION_DENIED_INSTANCE_IN_OPERATION": 1}
    assert doc["imagesPerInstance"] == {"i-1": 1}
    assert doc["duplicateInstances"] == []


async def test_token_bucket_and_seeded_errors(make_fake: FakeFactory) -> None:
    """A burst of 3 at 1/s: the 4th call is 429; with error_rate 1 every call is a 503."""
    fake = await make_fake(instances("i-1"), rate_limit=1, burst=3)
    body = b'{"instanceIds":["i-1"]}'
    codes = []
    for _ in range(4):
        status, doc = await _post(fake.url, body, _signed_headers(fake.url, body, action="DescribeInstancesStatus"))
        codes.append(doc.get("code", status))
    assert codes == [200, 200, 200, "REQUEST_LIMIT_EXCEEDED"]
    fake2 = await make_fake(instances("i-1"), error_rate=1.0)
    status, doc = await _post(fake2.url, body, _signed_headers(fake2.url, body, action="DescribeInstancesStatus"))
    assert (status, doc["code"]) == (503, "SERVICE_TEMPORARY_UNAVAILABLE")


async def _status_retry_after(url: str, body: bytes) -> tuple[int, str | None]:
    headers = _signed_headers(url, body, action="DescribeInstancesStatus")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v2/zec", data=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("Retry-After")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"rate_limit": 1, "burst": 1}, [(200, None), (429, None)], id="off-by-default"),
        pytest.param({"rate_limit": 1, "burst": 1, "retry_after": True}, [(200, None), (429, "1")], id="one-second"),
        pytest.param({"rate_limit": 0.25, "burst": 1, "retry_after": True}, [(200, None), (429, "4")], id="rounded-up"),
    ],
)
async def test_retry_after_header_on_429(
    make_fake: FakeFactory, config: dict[str, Any], expected: list[tuple[int, str | None]]
) -> None:
    """With retry_after, a 429 says in whole seconds (rounded up, at least 1) when the bucket refills."""
    fake = await make_fake(instances("i-1"), **config)
    body = b'{"instanceIds":["i-1"]}'
    assert [await _status_retry_after(fake.url, body) for _ in expected] == expected


def test_fleet_from_job_list(tmp_path: Path) -> None:
    """Fake-only columns set GPU, busy time and status; MISSING leaves the instance out."""
    path = tmp_path / "fleet.csv"
    path.write_text(
        "instanceId,fakeGpu,fakeBusySeconds,fakeStatus,fakeImageFails\n1,true,,,\n2,,5,,\n3,,,MISSING,\n4,,,running,yes\n"
    )
    fleet = {i.instance_id: i for i in fleet_from_job_list(path)}
    assert set(fleet) == {"1", "2", "4"}
    assert fleet["4"].image_fails
    assert fleet["1"].gpu
    assert fleet["2"].busy_until == 5
    assert fleet["4"].status == "RUNNING"


def test_fake_server_command_prints_url_and_serves(tmp_path: Path) -> None:
    """`imagebatch fake-server --instances 3` prints its URL first and stops cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batch",
            "fake-server",
            "--instances",
            "3",
            "--rate-limit",
            "50",
            "--write-jobs",
            str(tmp_path / "jobs.csv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(f"{url}/_fake/inspect", timeout=10) as resp:
            doc = json.load(resp)
        assert doc["instances"] == 3
        assert (tmp_path / "jobs.csv").read_text().splitlines()[1:] == [
            "1000000000000000001",
            "1000000000000000002",
            "1000000000000000003",
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in err
