"""Baseline: the official zenlayercloud-sdk-python, as a user would loop over a fleet.

``--mode threads``: a ThreadPoolExecutor of ``--concurrency`` workers; ``--mode sequential``: a
plain for loop. Busy instances (and 429s the SDK's own 3 retries did not absorb) are retried
after a fixed sleep; any other error fails the instance. Prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zenlayercloud.common.config import Config
from zenlayercloud.common.credential import Credential
from zenlayercloud.common.excpetion.zenlayer_cloud_sdk_exception import ZenlayerCloudSdkException
from zenlayercloud.zec.v20250901 import models, zec_client

RETRY_CODES = {"OPERATION_DENIED_INSTANCE_IN_OPERATION", "REQUEST_LIMIT_EXCEEDED"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job_list", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--mode", choices=["threads", "sequential"], default="threads")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--busy-sleep", type=float, default=5.0)
    parser.add_argument("--busy-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    with args.job_list.open() as handle:
        ids = [row["instanceId"] for row in csv.DictReader(handle)]
    config = Config(scheme="http", domain=args.endpoint.removeprefix("http://"), keep_alive=True)
    client = zec_client.ZecClient(Credential("fake-access-key-id", "fake-access-key-secret"), config)
    day = time.strftime("%Y%m%d", time.gmtime())

    def image(instance_id: str) -> str:
        request = models.CreateImageRequest()
        request.instanceId = instance_id
        request.imageName = f"{instance_id}-{day}"
        deadline = time.monotonic() + args.busy_timeout
        while True:
            try:
                client.CreateImage(request)
                return "succeeded"
            except ZenlayerCloudSdkException as exc:
                if exc.code in RETRY_CODES and time.monotonic() < deadline:
                    time.sleep(args.busy_sleep)
                    continue
                return "failed"

    if args.mode == "threads":
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            outcomes = list(pool.map(image, ids))
    else:
        outcomes = [image(i) for i in ids]
    print(json.dumps({"succeeded": outcomes.count("succeeded"), "failed": outcomes.count("failed")}))


if __name__ == "__main__":
    main()
