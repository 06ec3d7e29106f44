"""The event log's cached time stamp reads exactly as ``rfc3339`` (formatted once per second)."""

from __future__ import annotations

import pytest

from batch.events import _Stamp
from batch.text import rfc3339


@pytest.mark.parametrize(
    "moments",
    [
        pytest.param([1764480000.0], id="a whole second"),
        pytest.param([1764480000.123456, 1764480000.654321], id="two events in the same second"),
        pytest.param([1764480000.9999996], id="rounded up into the next second"),
        pytest.param([1764480000.5, 1764480001.25, 1764480000.75], id="across seconds and back"),
        pytest.param([1767225599.9999999, 1767225600.0000004], id="across midnight and a year"),
    ],
)
def test_stamp_matches_rfc3339(moments: list[float]) -> None:
    """Each stamp is the text rfc3339 gives for the same moment, cache or not."""
    stamp = _Stamp()
    assert [stamp(m) for m in moments] == [rfc3339(m) for m in moments]
