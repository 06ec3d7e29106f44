"""A fake Zenlayer ``zec`` API for tests, benchmarks and the demo.

The server (and with it ``aiohttp.web``) is imported only when :class:`FakeZenlayer` or
:class:`FakeConfig` is first used, so that ``imagebatch --help`` and ``validate``, which build
the ``fake-server`` flags from :mod:`batch.fake.cli`, stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .constants import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_TOKEN
from .errors import FakeApiError
from .state import FakeCloud, FakeImage, FakeInstance

if TYPE_CHECKING:
    from .server import FakeConfig, FakeZenlayer

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_TOKEN",
    "FakeApiError",
    "FakeCloud",
    "FakeConfig",
    "FakeImage",
    "FakeInstance",
    "FakeZenlayer",
]

_FROM_SERVER = frozenset({"FakeConfig", "FakeZenlayer"})


def __getattr__(name: str) -> Any:
    if name in _FROM_SERVER:
        return getattr(importlib.import_module(".server", __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
