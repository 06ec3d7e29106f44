"""Shared fixtures: the anyio backend, a fake Zenlayer server on loopback, credentials."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from batch import Credentials
from batch.fake import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    FakeCloud,
    FakeConfig,
    FakeInstance,
    FakeZenlayer,
)

CREDS = Credentials(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)
#: the environment of an ``imagebatch`` child process: the fake's key pair in zeno's variables
CLI_ENV = {
    **os.environ,
    "ZENLAYER_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY_ID,
    "ZENLAYER_ACCESS_KEY_SECRET": DEFAULT_ACCESS_KEY_SECRET,
}


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """``imagebatch ARGV`` in its own process (it handles signals, which only a main thread can):
    the exit code, stdout and stderr."""
    done = await anyio.run_process([sys.executable, "-m", "batch", *argv], env=CLI_ENV, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test sees the developer's Zenlayer settings (variables or ~/.zenlayer files)."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in (
        "ZENLAYER_PROFILE",
        "ZENLAYER_ACCESS_KEY_ID",
        "ZENLAYER_ACCESS_KEY_SECRET",
        "ZENLAYERCLOUD_ACCESS_KEY_ID",
        "ZENLAYERCLOUD_ACCESS_KEY_PASSWORD",
        "ZENLAYER_TOKEN",
        "ZENLAYER_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    return


def instances(*ids: str, **kwargs: Any) -> list[FakeInstance]:
    """STOPPED instances with the given ids."""
    return [FakeInstance(i, **kwargs) for i in ids]


FakeFactory = Callable[..., Any]


@pytest.fixture
async def make_fake() -> AsyncIterator[FakeFactory]:
    """Start fake servers on loopback port 0; all are stopped after the test."""
    started: list[FakeZenlayer] = []

    async def factory(
        fleet: list[FakeInstance] | None = None, *, cloud_kwargs: dict[str, Any] | None = None, **config: Any
    ) -> FakeZenlayer:
        cloud = FakeCloud(fleet or [], **(cloud_kwargs or {}))
        fake = FakeZenlayer(cloud, FakeConfig(**config))
        await fake.start()
        started.append(fake)
        return fake

    yield factory
    for fake in started:
        await fake.stop()


def write_csv(path: Path, ids: list[str], header: str = "instanceId") -> Path:
    """A one-column CSV job list."""
    path.write_text(header + "\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path
