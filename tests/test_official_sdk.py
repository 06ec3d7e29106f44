"""Cross-check with Zenlayer's official Python SDK: the fake accepts what the real SDK signs,
so the fake's verifier (and, by the shared vectors, our signer) follow the same algorithm."""

from __future__ import annotations

import anyio
import pytest

# The SDK is in the "test" extra: a missing SDK is a failure here, not a skip.
from zenlayercloud.common import config as sdk_config
from zenlayercloud.common.credential import Credential
from zenlayercloud.common.excpetion.zenlayer_cloud_sdk_exception import ZenlayerCloudSdkException
from zenlayercloud.zec.v20250901 import models, zec_client

from batch.fake import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET

from .conftest import FakeFactory, instances

pytestmark = pytest.mark.anyio


async def test_fake_accepts_official_sdk_requests(make_fake: FakeFactory) -> None:
    """CreateImage from the SDK (spaced JSON, its own headers) is accepted; a wrong secret is not."""
    fake = await make_fake(instances("i-1"))
    domain = fake.url.removeprefix("http://")

    def call(secret: str) -> str:
        client = zec_client.ZecClient(
            Credential(DEFAULT_ACCESS_KEY_ID, secret), sdk_config.Config(scheme="http", domain=domain)
        )
        request = models.CreateImageRequest()
        request.instanceId = "i-1"
        request.imageName = "sdk-image-1"
        try:
            return str(client.CreateImage(request).imageId)
        except ZenlayerCloudSdkException as exc:
            return str(exc.code)

    assert (await anyio.to_thread.run_sync(call, DEFAULT_ACCESS_KEY_SECRET)).startswith("img-")
    assert await anyio.to_thread.run_sync(call, "not-the-secret") == "AUTHFAILURE_SIGNATURE_FAILURE"
