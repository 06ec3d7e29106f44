"""The fake's custom images: tags stored and filtered, DeleteImages, the quota, scripted failures, the view."""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import pytest

from batch.client import ZecClient
from batch.errors import ApiError
from batch.fake import FakeCloud, FakeZenlayer
from batch.fake.cli import add_arguments, build_fake
from batch.fake.images import seed_image

from .conftest import CREDS, FakeFactory, instances

pytestmark = pytest.mark.anyio


class Clock:
    """A server clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ids(answer: dict[str, Any]) -> list[str]:
    return [i["imageId"] for i in answer["dataSet"]]


async def _list(client: ZecClient, **params: Any) -> list[str]:
    answer = await client.call("DescribeCustomImages", {"pageSize": 1000, **params})
    return _ids(answer.data)


async def _tagged_fake(make_fake: FakeFactory, **cloud_kwargs: Any) -> FakeZenlayer:
    """A fake holding four images: two of policy a (instances i-1, i-2), one of policy b, one untagged."""
    fake: FakeZenlayer = await make_fake(instances("i-1"), cloud_kwargs=cloud_kwargs)
    cloud = fake.cloud
    seed_image(cloud, "i-1", "n1", tags=[("imagebatch-policy", "a"), ("imagebatch-instance", "i-1")])
    seed_image(cloud, "i-2", "n2", tags=[("imagebatch-policy", "a"), ("imagebatch-instance", "i-2")])
    seed_image(cloud, "i-1", "n3", tags=[("imagebatch-policy", "b"), ("imagebatch-instance", "i-1")])
    seed_image(cloud, "i-1", "n4")
    return fake


async def test_create_image_stores_tags_and_the_listing_shows_them(make_fake: FakeFactory) -> None:
    """CreateImage's TagAssociation comes back on the image as {"tags": [...]}, in order."""
    fake = await make_fake(instances("i-1"))
    async with ZecClient(fake.url, CREDS) as client:
        made = await client.create_image("i-1", "img-one", tags=[("imagebatch-policy", "p"), ("env", "prod")])
        (item,) = [i async for i in client.describe_custom_images(image_ids=[made.image_id])]
    assert item["tags"] == {"tags": [{"key": "imagebatch-policy", "value": "p"}, {"key": "env", "value": "prod"}]}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"tags": [{"key": "imagebatch-policy", "value": "a"}]}, ["n1", "n2"], id="tag-pair"),
        pytest.param({"tagKeys": ["imagebatch-policy"]}, ["n1", "n2", "n3"], id="tag-key-any-value"),
        pytest.param(
            {
                "tags": [
                    {"key": "imagebatch-policy", "value": "a"},
                    {"key": "imagebatch-instance", "value": "i-1"},
                ]
            },
            ["n1"],
            id="every-pair-must-hold",
        ),
        pytest.param(
            {"tags": [{"key": "imagebatch-policy", "value": "b"}], "tagKeys": ["imagebatch-instance"]},
            ["n3"],
            id="pairs-and-keys-together",
        ),
        pytest.param({"tags": [{"key": "imagebatch-policy", "value": "c"}]}, [], id="no-match"),
        pytest.param({"tags": [], "tagKeys": []}, ["n1", "n2", "n3", "n4"], id="empty-filters-match-all"),
    ],
)
async def test_describe_custom_images_filters_by_tags(
    make_fake: FakeFactory, params: dict[str, Any], expected: list[str]
) -> None:
    """The tags (plain array) and tagKeys filters select images by their tags; untagged ones never match a filter."""
    fake = await _tagged_fake(make_fake)
    async with ZecClient(fake.url, CREDS) as client:
        answer = await client.call("DescribeCustomImages", {"pageSize": 1000, **params})
    assert [i["imageName"] for i in answer.data["dataSet"]] == expected
    assert answer.data["totalCount"] == len(expected)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param(
            {"tags": {"tags": [{"key": "k", "value": "v"}]}}, "INVALID_PARAMETER_TYPE", id="wrapped-form-refused"
        ),
        pytest.param({"tags": [{"key": "k"}]}, "INVALID_PARAMETER_TYPE", id="tag-without-value"),
        pytest.param({"tagKeys": "k"}, "INVALID_PARAMETER_TYPE", id="tag-keys-not-a-list"),
        pytest.param({"tagKeys": [f"k{n}" for n in range(21)]}, "INVALID_PARAMETER_EXCEED_LENGTH", id="21-keys"),
        pytest.param(
            {"tags": [{"key": f"k{n}", "value": "v"} for n in range(21)]},
            "INVALID_PARAMETER_EXCEED_LENGTH",
            id="21-tags",
        ),
    ],
)
async def test_bad_tag_filters_are_refused(make_fake: FakeFactory, params: dict[str, Any], code: str) -> None:
    """A tag filter of the wrong shape or over 20 items answers the parameter error, not a silent match."""
    fake = await _tagged_fake(make_fake)
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.call("DescribeCustomImages", params)
    assert info.value.code == code


async def test_tag_filters_page_like_any_listing(make_fake: FakeFactory) -> None:
    """totalCount counts every match; pages hold pageSize of them."""
    fake = await make_fake()
    for n in range(5):
        seed_image(fake.cloud, "i-1", f"n{n}", tags=[("imagebatch-policy", "a")])
    seed_image(fake.cloud, "i-1", "other")
    async with ZecClient(fake.url, CREDS) as client:
        answer = await client.call(
            "DescribeCustomImages", {"tagKeys": ["imagebatch-policy"], "pageSize": 2, "pageNum": 3}
        )
    assert answer.data["totalCount"] == 5
    assert [i["imageName"] for i in answer.data["dataSet"]] == ["n4"]


async def test_delete_sets_deleting_then_removes_after_the_delay(make_fake: FakeFactory) -> None:
    """An accepted image is DELETING at once and gone from the listing after transition_seconds."""
    clock = Clock()
    fake = await make_fake(cloud_kwargs={"clock": clock, "transition_seconds": 5.0})
    image = seed_image(fake.cloud, "i-1", "n1")
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.delete_images([image.image_id]) == []
        (item,) = [i async for i in client.describe_custom_images(image_ids=[image.image_id])]
        assert item["imageStatus"] == "DELETING"
        clock.now += 4.9
        assert await _list(client) == [image.image_id]
        clock.now += 0.2
        assert await _list(client) == []


async def test_quota_counts_an_image_until_it_is_gone(make_fake: FakeFactory) -> None:
    """With a quota of 1, CreateImage is refused while the old image is DELETING and accepted once it is gone."""
    clock = Clock()
    fake = await make_fake(instances("i-1"), cloud_kwargs={"clock": clock, "image_quota": 1, "transition_seconds": 5.0})
    old = seed_image(fake.cloud, "i-1", "old")
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.delete_images([old.image_id]) == []
        with pytest.raises(ApiError) as info:
            await client.create_image("i-1", "new")
        assert info.value.code == "INVALID_IMAGE_QUOTA_EXCEED"
        clock.now += 5.0
        assert (await client.create_image("i-1", "new")).image_id


async def test_deleting_or_creating_image_is_listed_as_failed(make_fake: FakeFactory) -> None:
    """A second delete of a DELETING image, and a delete of a CREATING one, come back in the failed list."""
    fake = await make_fake(instances("i-1"), cloud_kwargs={"transition_seconds": 60.0, "image_ready_seconds": 60.0})
    image = seed_image(fake.cloud, "i-1", "n1")
    async with ZecClient(fake.url, CREDS) as client:
        creating = await client.create_image("i-1", "making")
        assert await client.delete_images([image.image_id]) == []
        assert await client.delete_images([image.image_id, creating.image_id]) == [image.image_id, creating.image_id]
    view = fake.cloud.images
    assert view[image.image_id].status == "DELETING"
    assert view[creating.image_id].status == "CREATING"


async def test_scripted_failure_for_chosen_image_ids(make_fake: FakeFactory) -> None:
    """A DeleteImages script fails the chosen id (listed, left AVAILABLE) and the next call deletes it."""
    fake = await make_fake(scripts={"DeleteImages": {"img-00000001": ["fail"]}})
    first, second = seed_image(fake.cloud, "i-1", "n1"), seed_image(fake.cloud, "i-1", "n2")
    assert first.image_id == "img-00000001"
    async with ZecClient(fake.url, CREDS) as client:
        assert await client.delete_images([first.image_id, second.image_id]) == [first.image_id]
        assert fake.cloud.images[first.image_id].status == "AVAILABLE"
        assert fake.cloud.images[second.image_id].status == "DELETING"
        assert await client.delete_images([first.image_id]) == []


@pytest.mark.parametrize(
    ("cloud_kwargs", "code"),
    [
        pytest.param({}, "OPERATION_FAILED_RESOURCE_NOT_FOUND", id="default-code"),
        pytest.param({"missing_image_code": "INVALID_IMAGE_NOT_FOUND"}, "INVALID_IMAGE_NOT_FOUND", id="older-code"),
    ],
)
async def test_unknown_image_alone_answers_not_found(
    make_fake: FakeFactory, cloud_kwargs: dict[str, Any], code: str
) -> None:
    """DeleteImages of one id that does not exist answers 404 with the configured documented code."""
    fake = await make_fake(cloud_kwargs=cloud_kwargs)
    async with ZecClient(fake.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.delete_images(["img-missing"])
    assert (info.value.code, info.value.status) == (code, 404)


async def test_unknown_image_among_others(make_fake: FakeFactory) -> None:
    """Among other ids an unknown one is listed as failed and the rest are deleted; with batch_errors=whole
    the whole call fails and nothing is deleted."""
    listed = await make_fake()
    image = seed_image(listed.cloud, "i-1", "n1")
    async with ZecClient(listed.url, CREDS) as client:
        assert await client.delete_images([image.image_id, "img-missing"]) == ["img-missing"]
    assert listed.cloud.images[image.image_id].status == "DELETING"

    whole = await make_fake(cloud_kwargs={"batch_errors": "whole"})
    image = seed_image(whole.cloud, "i-1", "n1")
    async with ZecClient(whole.url, CREDS) as client:
        with pytest.raises(ApiError) as info:
            await client.delete_images([image.image_id, "img-missing"])
    assert info.value.code == "OPERATION_FAILED_RESOURCE_NOT_FOUND"
    assert whole.cloud.images[image.image_id].status == "AVAILABLE"


async def test_images_view_shows_every_image_with_tags_and_delete_requests(make_fake: FakeFactory) -> None:
    """GET /_fake/images lists DELETING images too, tags as an object, and the calls that named each id."""
    fake = await _tagged_fake(make_fake, transition_seconds=60.0)
    async with ZecClient(fake.url, CREDS) as client:
        await client.delete_images(["img-00000001", "img-00000004"])
        await client.delete_images(["img-00000001"])
    async with aiohttp.ClientSession() as session, session.get(f"{fake.url}/_fake/images") as resp:
        view = await resp.json()
    by_id = {i["imageId"]: i for i in view["images"]}
    assert len(by_id) == 4
    assert by_id["img-00000001"]["imageStatus"] == "DELETING"
    assert by_id["img-00000001"]["tags"] == {"imagebatch-policy": "a", "imagebatch-instance": "i-1"}
    assert by_id["img-00000004"]["tags"] == {}
    assert view["deleteRequests"] == {"img-00000001": 2, "img-00000004": 1}
    assert view["largestDeleteCall"] == 2


def test_missing_image_code_flag() -> None:
    """fake-server --missing-image-code picks the code; an undocumented one is refused by argparse."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    fake = build_fake(parser.parse_args(["--missing-image-code", "INVALID_IMAGE_NOT_FOUND"]))
    assert fake.cloud.missing_image_code == "INVALID_IMAGE_NOT_FOUND"
    assert build_fake(parser.parse_args([])).cloud.missing_image_code == "OPERATION_FAILED_RESOURCE_NOT_FOUND"
    with pytest.raises(SystemExit):
        parser.parse_args(["--missing-image-code", "NOPE"])
    with pytest.raises(ValueError, match="missing_image_code"):
        FakeCloud(missing_image_code="NOPE")
