"""Baseline: the practical limit. A bare aiohttp loop that sends the same signed CreateImage
requests at the same concurrency, with no validation, journal, logging or retries.

``--rate R`` paces it as a user would write it: each request waits for its own send time,
``1 / R`` seconds after the previous one's (one timer per request).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from pathlib import Path

import aiohttp

from batch.signing import ALGORITHM, sign


async def run(ids: list[str], endpoint: str, concurrency: int, rate: float | None = None) -> dict[str, int]:
    host = endpoint.removeprefix("http://")
    url = f"{endpoint}/api/v2/zec"
    day = time.strftime("%Y%m%d", time.gmtime())
    queue = iter(ids)
    counts = {"succeeded": 0, "failed": 0}
    loop = asyncio.get_running_loop()
    next_send = loop.time()

    async def pace() -> None:
        nonlocal next_send
        if rate is None:
            return
        now = loop.time()
        at = max(now, next_send)
        next_send = at + 1 / rate
        if at > now:
            await asyncio.sleep(at - now)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for instance_id in queue:
                await pace()
                body = json.dumps(
                    {"instanceId": instance_id, "imageName": f"{instance_id}-{day}"}, separators=(",", ":")
                ).encode()
                ts = int(time.time())
                sig = sign(
                    access_key_id="fake-access-key-id",
                    secret="fake-access-key-secret",
                    method="POST",
                    content_type="application/json",
                    host=host,
                    timestamp=ts,
                    body=body,
                )
                headers = {
                    "Content-Type": "application/json",
                    "Host": host,
                    "X-ZC-Action": "CreateImage",
                    "X-ZC-Version": "2025-09-01",
                    "X-ZC-Timestamp": str(ts),
                    "X-ZC-Signature-Method": ALGORITHM,
                    "Authorization": sig.authorization,
                }
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    counts["succeeded" if resp.status == 200 else "failed"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job_list", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, help="requests per second (default: as fast as it goes)")
    args = parser.parse_args()
    with args.job_list.open() as handle:
        ids = [row["instanceId"] for row in csv.DictReader(handle)]
    print(json.dumps(asyncio.run(run(ids, args.endpoint, args.concurrency, args.rate))))


if __name__ == "__main__":
    main()
