"""The fake's command line and its independence from the client's code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import batch
from batch.cli import main
from batch.fake.auth import expected_signature
from batch.fake.cli import host_problem
from batch.fake.fleet import FleetError, fleet_from_job_list
from batch.fake.handlers import image_name_error

FAKE_DIR = Path(batch.__file__).parent / "fake"
VECTORS = json.loads((Path(__file__).parent / "data" / "zenlayer-sign-vector.json").read_text())["vectors"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--port", "99999"], "argument --port: '99999' is not a TCP port", id="port-too-big"),
        pytest.param(["--port", "-1"], "argument --port: '-1' must be zero or more", id="port-negative"),
        pytest.param(["--port", "http"], "argument --port: 'http' is not a whole number", id="port-not-number"),
        pytest.param(["--instances", "-5"], "argument --instances: '-5' must be zero or more", id="instances"),
        pytest.param(["--quota", "-1"], "argument --quota: '-1' must be zero or more", id="quota"),
        pytest.param(["--burst", "0"], "argument --burst: '0' must be a positive number", id="burst"),
        pytest.param(["--rate-limit", "nan"], "argument --rate-limit: 'nan' is not a finite number", id="rate-nan"),
        pytest.param(["--host", "0.0.0.0"], "argument --host: '0.0.0.0' is not a loopback address", id="any-v4"),
        pytest.param(["--host", "::"], "argument --host: '::' is not a loopback address", id="any-v6"),
        pytest.param(["--host", ""], "argument --host: '' (every interface) is not a loopback", id="empty"),
        pytest.param(["--host", "example.com"], "argument --host: 'example.com' is not a loopback", id="name"),
    ],
)
def test_bad_fake_server_flags_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad fake-server flag is an argparse error naming the flag: exit 2, no traceback, nothing served."""
    with pytest.raises(SystemExit) as info:
        main(["fake-server", *argv])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert needle in captured.err
    assert "usage: imagebatch fake-server" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("host", "allow_remote", "error", "warning"),
    [
        pytest.param("127.0.0.1", False, False, False, id="v4-loopback"),
        pytest.param("127.0.0.2", False, False, False, id="v4-loopback-net"),
        pytest.param("::1", False, False, False, id="v6-loopback"),
        pytest.param("localhost", False, False, False, id="localhost"),
        pytest.param("0.0.0.0", False, True, False, id="any-refused"),
        pytest.param("192.0.2.7", False, True, False, id="lan-refused"),
        pytest.param("0.0.0.0", True, False, True, id="any-allowed-with-warning"),
        pytest.param("", True, False, True, id="empty-allowed-with-warning"),
        pytest.param("127.0.0.1", True, False, False, id="loopback-needs-no-warning"),
    ],
)
def test_host_policy(host: str, allow_remote: bool, error: bool, warning: bool) -> None:
    """Loopback hosts are fine; others need --allow-remote and then get a warning naming the credentials risk."""
    got_error, got_warning = host_problem(host, allow_remote=allow_remote)
    assert (got_error is not None, got_warning is not None) == (error, warning)
    if got_warning is not None:
        assert "well-known fake credentials" in got_warning
    if got_error is not None:
        assert "--allow-remote" in got_error


def test_bad_fleet_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --fleet row is a one-line error with file, line and field, exit 2, before anything is served."""
    path = tmp_path / "fleet.csv"
    path.write_text("instanceId,fakeBusySeconds\n1,\n2,soon\n")
    assert main(["fake-server", "--fleet", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}:3: field 'fakeBusySeconds': 'soon' is not a number" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--help"], id="help"),
        pytest.param(["validate", "{jobs}"], id="validate"),
        pytest.param(["fake-server", "--port", "99999"], id="fake-server-bad-flag"),
    ],
)
def test_light_commands_do_not_import_the_server(tmp_path: Path, argv: list[str]) -> None:
    """`imagebatch --help` and `validate` build the fake-server flags without importing aiohttp.web."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("instanceId\n1\n")
    args = [a.replace("{jobs}", str(jobs)) for a in argv]
    code = (
        "import sys\n"
        "from batch.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('aiohttp.web' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stderr.splitlines()[-1] == "False", proc.stderr


def _imports_outside_fake(path: Path) -> list[str]:
    """Every import in a batch/fake module that reaches a batch module outside batch/fake."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level >= 2 or (node.level == 0 and node.module is not None and _outside(node.module)):
                found.append(f"{path.name}:{node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names if _outside(a.name)]
    return found


def _outside(module: str) -> bool:
    return (module == "batch" or module.startswith("batch.")) and not (
        module == "batch.fake" or module.startswith("batch.fake.")
    )


def test_the_fake_imports_nothing_of_the_client() -> None:
    """No module under batch/fake imports from batch outside batch/fake (a shared bug would go unseen)."""
    modules = sorted(FAKE_DIR.rglob("*.py"))
    assert len(modules) >= 8
    offending = [line for path in modules for line in _imports_outside_fake(path)]
    assert offending == []


def test_import_check_catches_client_imports(tmp_path: Path) -> None:
    """The import check itself sees relative and absolute imports of the client's modules."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from ..signing import sign\nimport batch.client\nfrom batch import naming\nfrom .state import X\n"
        "from batch.fake import errors\n"
    )
    assert [line.split(": ", 1)[1] for line in _imports_outside_fake(sample)] == [
        "from ..signing import ...",
        "import batch.client",
        "from batch import ...",
    ]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_fake_signature_matches_the_published_vectors(vector: dict[str, object]) -> None:
    """The fake's own HMAC code reproduces the documented signatures, byte for byte."""
    inputs = vector["inputs"]
    assert isinstance(inputs, dict)
    got = expected_signature(
        secret=inputs["access_key_password"],
        content_type=inputs["content_type"],
        host=inputs["host"],
        timestamp=str(inputs["timestamp"]),
        body=inputs["payload"].encode(),
    )
    assert str(vector["expected_authorization"]).endswith(f"Signature={got}")


def test_fake_signature_covers_the_content_type() -> None:
    """The doc's negative control: plain application/json signs differently from the charset form."""
    inputs = VECTORS[0]["inputs"]
    control = VECTORS[0]["verification"]["negative_control_same_request_with_content_type_application_json"]
    got = expected_signature(
        secret=inputs["access_key_password"],
        content_type="application/json",
        host=inputs["host"],
        timestamp=str(inputs["timestamp"]),
        body=inputs["payload"].encode(),
    )
    assert got == control["signature"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("ab", None, id="two-chars"),
        pytest.param("a" * 63, None, id="sixty-three"),
        pytest.param("web-01_golden.2026", None, id="all-allowed-chars"),
        pytest.param("a", "INVALID_PARAMETER_LESS_LENGTH", id="one-char"),
        pytest.param("a" * 64, "INVALID_PARAMETER_EXCEED_LENGTH", id="sixty-four"),
        pytest.param("web/01", "INVALID_PARAMETER_PATTERN_ERROR", id="slash"),
        pytest.param("wéb01", "INVALID_PARAMETER_PATTERN_ERROR", id="non-ascii"),
        pytest.param("-web01", "INVALID_PARAMETER_PATTERN_ERROR", id="leading-dash"),
        pytest.param("web01.", "INVALID_PARAMETER_PATTERN_ERROR", id="trailing-dot"),
    ],
)
def test_fake_image_name_rule(name: str, code: str | None) -> None:
    """The fake's own imageName rule (2-63 of [A-Za-z0-9._-], alnum at both ends) and its error codes."""
    error = image_name_error(name)
    assert (error.code if error is not None else None) == code


FLEET_CSV = (
    "instanceId,imageName,fakeGpu,fakeBusySeconds,fakeStatus,fakeImageFails\n"
    "1,x,true,,,\n2,,,5,,\n3,,,,MISSING,\n4,,,,running,yes\n"
)
FLEET_JSON = """{
  "defaults": {"resourceGroupId": "rg-web", "tags": {"env": "prod"}},
  "jobs": [
    {"instanceId": "1", "fakeGpu": true},
    {"instanceId": "2", "fakeBusySeconds": 5},
    {"instanceId": "3", "fakeStatus": "MISSING"},
    {"instanceId": "4", "fakeStatus": "running", "fakeImageFails": "yes"}
  ]
}
"""
FLEET_JSONL = (
    '{"instanceId": "1", "fakeGpu": "1"}\n{"instanceId": "2", "fakeBusySeconds": "5"}\n\n'
    '{"instanceId": "3", "fakeStatus": "missing"}\n'
    '{"instanceId": "4", "fakeStatus": "RUNNING", "fakeImageFails": true}\n'
)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("fleet.csv", FLEET_CSV, id="csv"),
        pytest.param("fleet.json", FLEET_JSON, id="json-object"),
        pytest.param("fleet.json", "[" + FLEET_JSON.split("[", 1)[1].rsplit("]", 1)[0] + "]", id="json-array"),
        pytest.param("fleet.jsonl", FLEET_JSONL, id="jsonl"),
    ],
)
def test_fleet_reader_formats(tmp_path: Path, name: str, text: str) -> None:
    """The fake reads instanceId and the fake-only columns from CSV, JSON and JSON Lines alike."""
    path = tmp_path / name
    path.write_text(text)
    fleet = {i.instance_id: i for i in fleet_from_job_list(path)}
    assert set(fleet) == {"1", "2", "4"}
    assert fleet["1"].gpu
    assert not fleet["2"].gpu
    assert fleet["2"].busy_until == 5
    assert (fleet["4"].status, fleet["4"].image_fails) == ("RUNNING", True)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("f.csv", "id\n1\n", "f.csv:1: field 'instanceId': required column", id="csv-no-column"),
        pytest.param("f.csv", "instanceId\n1\n\n1\n", "f.csv:4: field 'instanceId': '1' repeats line 2", id="dup"),
        pytest.param("f.csv", "instanceId,fakeGpu\n1,maybe\n", "f.csv:2: field 'fakeGpu': 'maybe' is not", id="flag"),
        pytest.param(
            "f.csv", "instanceId,fakeStatus\n1,ASLEEP\n", "f.csv:2: field 'fakeStatus': 'ASLEEP' is not", id="status"
        ),
        pytest.param(
            "f.csv", "instanceId,fakeBusySeconds\n1,-2\n", "f.csv:2: field 'fakeBusySeconds': '-2' must be", id="busy"
        ),
        pytest.param("f.json", '[\n {"instanceId": "1"},\n 7\n]', "f.json:3: a job must be an object", id="json-7"),
        pytest.param("f.json", '[\n {"instanceId": "1"},\n {"instanceId": }\n]', "f.json:3: not valid JSON", id="bad"),
        pytest.param("f.json", '{"defaults": {}}', "f.json:1: field 'jobs'", id="json-no-jobs"),
        pytest.param("f.jsonl", '{"instanceId": "1"}\n{"instanceId": 5}\n', "f.jsonl:2: field 'instanceId'", id="id"),
        pytest.param("f.txt", "instanceId\n1\n", "cannot tell the format", id="suffix"),
    ],
)
def test_fleet_reader_errors_name_the_place(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Each bad fleet file is a FleetError naming the file, the line and the field."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FleetError) as info:
        fleet_from_job_list(path)
    assert message in str(info.value).replace(str(tmp_path) + "/", "")
