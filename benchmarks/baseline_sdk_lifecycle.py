"""Baseline: stop -> image -> start a live fleet with the official zenlayercloud-sdk-python, as a
user would write it.

One function per instance, run in a ThreadPoolExecutor of ``--threads`` workers (so at most that
many instances are down at once, the same cap imagebatch gets): StopInstances([id], graceful) ->
poll DescribeInstancesStatus([id]) every ``--poll-interval`` until STOPPED -> CreateImage -> poll
DescribeCustomImages(imageIds=[image]) until AVAILABLE -> poll the instance until it leaves
IMAGING -> StartInstances([id]) -> poll until RUNNING. Once the stop is accepted, the start is
sent whatever happens to the image (a user's ``finally``). Every call goes through the SDK's own
429 retries (3, at 1/2/4 s), then a fixed sleep and a retry on 429 or busy; any other error fails
the instance. Prints one JSON line of counts.

``--time-scale S`` runs the scenario S times faster, as the harness's fake does: the SDK's back-off
(1/2/4 s) and the busy sleep are divided by S, so the baseline behaves as it would in real time.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zenlayercloud.common.config import Config
from zenlayercloud.common.credential import Credential
from zenlayercloud.common.excpetion.zenlayer_cloud_sdk_exception import ZenlayerCloudSdkException
from zenlayercloud.zec.v20250901 import models, zec_client

RETRY_CODES = {"OPERATION_DENIED_INSTANCE_IN_OPERATION", "REQUEST_LIMIT_EXCEEDED"}


class CycleError(Exception):
    """One instance's cycle went wrong (a refused call, a wait that timed out, a FAILED image)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_list", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--threads", type=int, default=10, help="workers, i.e. instances down at once")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (scaled)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="divides the SDK back-off and --busy-sleep")
    parser.add_argument("--busy-sleep", type=float, default=5.0, help="real seconds to sleep on 429 or busy")
    parser.add_argument("--wait-timeout", type=float, default=3600.0, help="seconds (scaled) one wait may take")
    args = parser.parse_args()
    with args.job_list.open() as handle:
        ids = [row["instanceId"] for row in csv.DictReader(handle)]
    scale = args.time_scale
    config = Config(
        scheme="http",
        domain=args.endpoint.removeprefix("http://"),
        keep_alive=True,
        # The SDK's default back-off (2**i seconds), on the scenario's clock.
        rate_limit_retry_duration=lambda index: 2**index / scale,
    )
    client = zec_client.ZecClient(Credential("fake-access-key-id", "fake-access-key-secret"), config)
    busy_sleep = args.busy_sleep / scale
    day = time.strftime("%Y%m%d", time.gmtime())

    def call(send: Callable[[Any], Any], request: Any) -> Any:
        """One API call: the SDK's own 429 retries, then sleep and retry on 429 or busy."""
        deadline = time.monotonic() + args.wait_timeout
        while True:
            try:
                return send(request)
            except ZenlayerCloudSdkException as exc:
                if exc.code in RETRY_CODES and time.monotonic() < deadline:
                    time.sleep(busy_sleep)
                    continue
                raise

    def instance_status(instance_id: str) -> str | None:
        request = models.DescribeInstancesStatusRequest()
        request.instanceIds = [instance_id]
        answer = call(client.DescribeInstancesStatus, request)
        for item in answer.dataSet or []:
            if item.instanceId == instance_id:
                return str(item.instanceStatus)
        return None

    def image_status(image_id: str) -> str | None:
        request = models.DescribeCustomImagesRequest()
        request.imageIds = [image_id]
        answer = call(client.DescribeCustomImages, request)
        for item in answer.dataSet or []:
            if item.imageId == image_id:
                return str(item.imageStatus)
        return None

    def poll(read: Callable[[], str | None], done: Callable[[str | None], bool], what: str) -> str | None:
        deadline = time.monotonic() + args.wait_timeout
        while True:
            status = read()
            if done(status):
                return status
            if time.monotonic() > deadline:
                raise CycleError(f"{what}: still {status}")
            time.sleep(args.poll_interval)

    def power(action: str, instance_id: str, **fields: Any) -> None:
        request = getattr(models, f"{action}Request")()
        request.instanceIds = [instance_id]
        for key, value in fields.items():
            setattr(request, key, value)
        answer = call(getattr(client, action), request)
        if instance_id in (answer.instanceIds or []):
            raise CycleError(f"{action} listed {instance_id} as failed")

    def cycle(instance_id: str) -> str:
        try:
            power("StopInstances", instance_id, forceShutdown=False)
        except (ZenlayerCloudSdkException, CycleError):
            return "failed"
        outcome = "failed"
        try:
            poll(lambda: instance_status(instance_id), lambda s: s == "STOPPED", "stop")
            request = models.CreateImageRequest()
            request.instanceId = instance_id
            request.imageName = f"{instance_id}-{day}"
            image_id = call(client.CreateImage, request).imageId
            ended = poll(lambda: image_status(image_id), lambda s: s in {"AVAILABLE", "FAILED"}, "image")
            outcome = "succeeded" if ended == "AVAILABLE" else "failed"
        except (ZenlayerCloudSdkException, CycleError):
            pass
        try:
            poll(lambda: instance_status(instance_id), lambda s: s != "IMAGING", "imaging")
            power("StartInstances", instance_id)
            poll(lambda: instance_status(instance_id), lambda s: s == "RUNNING", "start")
        except (ZenlayerCloudSdkException, CycleError):
            return "not restarted"
        return outcome

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        outcomes = list(pool.map(cycle, ids))
    print(json.dumps({key: outcomes.count(key) for key in ("succeeded", "failed", "not restarted")}))


if __name__ == "__main__":
    main()
