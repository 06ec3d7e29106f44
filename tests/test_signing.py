"""ZC2-HMAC-SHA256 against every shared vector, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch.signing import canonical_request, sign

VECTORS = json.loads((Path(__file__).parent / "data" / "zenlayer-sign-vector.json").read_text())["vectors"]


def _sign(vector: dict[str, Any], **override: Any) -> Any:
    inputs = vector["inputs"]
    key_id = inputs.get("access_key_id") or inputs["access_key_id_in_authorization_header"]
    kwargs = {
        "access_key_id": key_id,
        "secret": inputs["access_key_password"],
        "method": inputs["method"],
        "content_type": inputs["content_type"],
        "host": inputs["host"],
        "timestamp": inputs["timestamp"],
        "body": inputs["payload"].encode(),
    }
    kwargs.update(override)
    return sign(**kwargs)


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["id"]) for v in VECTORS])
def test_vector_authorization_matches(vector: dict[str, Any]) -> None:
    """Each vector's Authorization header is reproduced exactly."""
    assert _sign(vector).authorization == vector["expected_authorization"]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["id"]) for v in VECTORS])
def test_vector_intermediates_match(vector: dict[str, Any]) -> None:
    """Payload hash, canonical request and string to sign match where the vector gives them."""
    got = _sign(vector)
    known = {**vector.get("published", {}), **vector.get("derived", {}), **vector.get("intermediate", {})}
    assert got.hashed_payload == known["hashed_request_payload"]
    if "canonical_request" in known:
        assert got.canonical_request == known["canonical_request"]
    if "string_to_sign" in known:
        assert got.string_to_sign == known["string_to_sign"]
    if "signature" in known:
        assert got.signature == known["signature"]


def test_published_example_negative_control() -> None:
    """Plain application/json signs the doc's request differently, exactly as recorded."""
    vector = VECTORS[0]
    control = vector["verification"]["negative_control_same_request_with_content_type_application_json"]
    got = _sign(vector, content_type="application/json")
    assert got.signature == control["signature"]


def test_key_id_is_not_signed() -> None:
    """The doc's two key ids give the same signature: only the secret keys the HMAC."""
    vector = VECTORS[0]
    a = _sign(vector, access_key_id=vector["inputs"]["access_key_id_in_doc_prose"])
    b = _sign(vector)
    assert a.signature == b.signature
    assert a.authorization != b.authorization


def test_canonical_request_has_blank_line_and_uri_slash() -> None:
    """The canonical URI is '/', and an empty line separates the headers from the signed-header list."""
    text = canonical_request(method="POST", content_type="application/json", host="h:8080", body=b"{}")
    assert text.split("\n")[:7] == [
        "POST",
        "/",
        "",
        "content-type:application/json",
        "host:h:8080",
        "",
        "content-type;host",
    ]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"body": b'{"instanceId":"x"}'}, id="body"),
        pytest.param({"secret": "other"}, id="secret"),
        pytest.param({"timestamp": 1735689601}, id="timestamp"),
        pytest.param({"host": "console.zenlayer.com:443"}, id="host-with-port"),
    ],
)
def test_any_signed_change_changes_signature(change: dict[str, Any]) -> None:
    """Body, secret, timestamp and host are all covered by the signature."""
    vector = VECTORS[1]
    assert _sign(vector, **change).signature != _sign(vector).signature
