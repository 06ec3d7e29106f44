"""The shared compact JSON encoder, called straight into C, writes what json.dumps writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch._jsonenc import compact_encoder, compact_json


class _Odd:
    def __repr__(self) -> str:
        return "<odd>"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "e"}}, id="nested"),
        pytest.param({"name": "naïve-名前-\u2028", "ctl": "tab\tnl\n\"q\"\\"}, id="unicode-and-escapes"),
        pytest.param({"f": 0.1 + 0.2, "big": 10**30, "neg": -0.0, "inf": float("inf")}, id="numbers"),
        pytest.param({1: "int key", "k": ()}, id="int-key-and-tuple"),
        pytest.param([], id="empty-list"),
        pytest.param("plain", id="top-level-string"),
        pytest.param(None, id="null"),
    ],
)
def test_same_text_as_json_dumps(value: Any) -> None:
    """Every kind of value the hot paths encode comes out byte for byte as json.dumps writes it."""
    assert compact_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_a_value_json_cannot_encode_is_a_type_error_or_goes_to_default() -> None:
    """Without a default an unknown type is a TypeError; with one, the default's text is used."""
    with pytest.raises(TypeError, match="_Odd"):
        compact_json({"x": _Odd()})
    assert compact_encoder(default=repr)({"x": _Odd()}) == '{"x":"<odd>"}'
    # The encoder keeps no state across calls: it works again after the error.
    assert compact_json({"x": 1}) == '{"x":1}'
