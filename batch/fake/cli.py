"""``imagebatch fake-server``: serve the fake API until interrupted."""

from __future__ import annotations

import argparse
import random
import signal
import sys

import anyio

from .fleet import fleet_from_count, fleet_from_job_list
from .server import FakeConfig, FakeZenlayer
from .state import FakeCloud

__all__ = ["build_fake", "serve"]


def build_fake(args: argparse.Namespace) -> FakeZenlayer:
    """A fake server from the ``fake-server`` flags."""
    if args.fleet:
        instances = fleet_from_job_list(args.fleet)
    else:
        instances = fleet_from_count(
            args.instances,
            busy_fraction=args.busy_fraction,
            busy_max_seconds=args.busy_max_seconds,
            gpu_fraction=args.gpu_fraction,
            seed=args.seed,
        )
    dice = random.Random(args.seed)  # noqa: S311 - fixture dice
    failing = {i.instance_id for i in instances if i.image_fails or dice.random() < args.image_fail_fraction}
    cloud = FakeCloud(
        instances,
        image_ready_seconds=args.image_ready_seconds,
        image_quota=args.quota,
        failed_images=failing,
        transition_seconds=args.transition_seconds,
        list_lag_seconds=args.list_lag_seconds,
    )
    config = FakeConfig(
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        tokens=frozenset({args.token}),
        rate_limit=args.rate_limit,
        burst=args.burst,
        latency=args.latency,
        error_rate=args.error_rate,
        lost_response_rate=args.lost_response_rate,
        seed=args.seed,
        max_skew=args.max_skew,
    )
    return FakeZenlayer(cloud, config)


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; the first stdout line is the base URL."""
    fake = build_fake(args)
    if args.write_jobs:
        ids = sorted(fake.cloud.instances)
        args.write_jobs.write_text("instanceId\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    url = await fake.start(args.host, args.port)
    print(url, flush=True)
    print(f"fake Zenlayer API: {len(fake.cloud.instances)} instances; inspect at {url}/_fake/inspect", file=sys.stderr)
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    finally:
        await fake.stop()
    return 0
