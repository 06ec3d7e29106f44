"""Type-check-only use of the public API: mypy checks this file, nothing runs it.

If a change breaks how callers use the package, mypy fails here first.
"""

from __future__ import annotations

from pathlib import Path

from batch import (
    AmbiguousError,
    ApiError,
    CreatedImage,
    Credentials,
    FatalRunError,
    InstanceBusyError,
    RequestRecord,
    ZecClient,
    credentials_from_env,
    sign,
)
from batch.fake import FakeCloud, FakeConfig, FakeInstance, FakeZenlayer
from batch.options import RunOptions
from batch.run import Run, RunOutcome


async def use_client() -> None:
    seen: list[RequestRecord] = []

    async def gate(action: str) -> None:
        del action

    credentials: Credentials = credentials_from_env({"ZENLAYER_TOKEN": "t"})
    async with ZecClient("https://console.zenlayer.com", credentials, gate=gate, observer=seen.append) as client:
        try:
            created: CreatedImage = await client.create_image("1", "name-1", tags=[("env", "prod")])
        except InstanceBusyError as busy:
            code: str = busy.code
            del code
        except AmbiguousError as lost:
            committed: bool = lost.may_have_committed
            del committed
        except FatalRunError:
            raise
        except ApiError as err:
            status: int | None = err.status
            del status
        else:
            ids: list[str] = await client.delete_images([created.image_id])
            del ids
        async for image in client.describe_custom_images(image_name="name-1"):
            name: object = image.get("imageName")
            del name
        statuses: dict[str, str] = await client.describe_instances_status(["1"])
        failed: list[str] = await client.stop_instances(["1"], force_shutdown=False)
        del statuses, failed


async def use_fake_and_run() -> int:
    fake = FakeZenlayer(FakeCloud([FakeInstance("1")]), FakeConfig(rate_limit=10.0))
    url: str = await fake.start()
    options = RunOptions(concurrency=4, rate=5.0, wait=True)
    run = Run(Path("jobs.csv"), Path("out"), options, credentials=Credentials("id", "secret"), endpoint=url)
    outcome: RunOutcome = await run.execute()
    await fake.stop()
    signature: str = sign(
        access_key_id="id", secret="s", method="POST", content_type="application/json", host="h", timestamp=1, body=b""
    ).authorization
    del signature
    return outcome.exit_code
