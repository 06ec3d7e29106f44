"""A fake Zenlayer ``zec`` API for tests, benchmarks and the demo."""

from __future__ import annotations

from .errors import FakeApiError
from .server import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_TOKEN,
    FakeConfig,
    FakeZenlayer,
)
from .state import FakeCloud, FakeImage, FakeInstance

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
