"""Syncing a segment to a WeChat user tag against the simulator: batches of at most 50 openids, only the
difference on a second sync, the 100-tag limit, a follower at 20 tags skipped, deletion; and the
simulator's tag endpoints with their errcodes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bot.wechat_sim.tag_state import SimTag
from handlers.core.errors import ValidationError
from handlers.wechat.client import AppCredentials, WeChatClient
from models.member import Member
from models.merchant import Merchant
from models.tag import MemberTag, Segment, Tag
from tests.support.factories import make_member, make_merchant, staff_headers
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import BACKGROUND, EFFECTS, REDIS

OA = "wxshopoa"


@pytest.fixture
async def app_client(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> TestClient:
    wechat_sim.add_app(OA, "shop-oa-secret")
    client: TestClient = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    return client


@pytest.fixture
async def shop(app_client: TestClient) -> Merchant:
    return await make_merchant()


async def followers(wechat_sim: WeChatSim, shop: Merchant, count: int) -> list[Member]:
    members = []
    for n in range(count):
        openid = f"o-fan-{n:03d}"
        wechat_sim.add_follower(OA, openid)
        members.append(await make_member(shop, openid=openid))
    return members


async def run_tasks(client: TestClient) -> None:
    """Run the due tasks as the worker would; with in-process Redis the app's own background run of
    them comes first."""
    await client.app[BACKGROUND].drain()
    await client.app[EFFECTS].run_due(datetime.now(UTC))


def batches(wechat_sim: WeChatSim, endpoint: str) -> list[list[str]]:
    return [r["body"]["openid_list"] for r in wechat_sim.records(endpoint) if r["errcode"] == 0]


def sim_tag(wechat_sim: WeChatSim, tag_id: int) -> set[str]:
    return set(wechat_sim.state.user_tags.of(OA)[tag_id].openids)


async def test_sync_tags_the_following_audience_in_batches_of_50_then_only_the_difference(
    app_client: TestClient, shop: Merchant, wechat_sim: WeChatSim
) -> None:
    admin = await staff_headers(app_client, shop, "admin")
    members = await followers(wechat_sim, shop, 130)
    tag = await Tag.create(merchant_id=shop.id, name="新品")
    now = datetime.now(UTC)
    for member in members[:120]:
        await MemberTag.create(tag_id=tag.id, member_id=member.id, added_at=now)
    # In the segment but not following any more: never sent to WeChat.
    await Member.filter(id=members[0].id).update(openid=None, subscribed=False)
    segment = await Segment.create(merchant_id=shop.id, name="新品人群", expression={"tag": tag.id})
    response = await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=admin)
    assert response.status == 202, await response.text()
    assert (await response.json())["sync_status"] == "queued"
    await run_tasks(app_client)
    synced = await Segment.get(id=segment.id)
    assert (synced.sync_status, synced.synced_count, synced.sync_error) == ("done", 119, "")
    assert synced.wechat_tag_id is not None
    sent = batches(wechat_sim, "cgi-bin/tags/members/batchtagging")
    assert [len(b) for b in sent] == [50, 50, 19]
    expected = {m.openid for m in members[1:120]}
    assert sim_tag(wechat_sim, synced.wechat_tag_id) == expected
    assert [r["body"]["tag"]["name"] for r in wechat_sim.records("cgi-bin/tags/create")] == ["新品人群"]

    # Ten leave the segment, five join: one untagging call, one tagging call, the same WeChat tag.
    await MemberTag.filter(tag_id=tag.id, member_id__in=[m.id for m in members[10:20]]).delete()
    for member in members[120:125]:
        await MemberTag.create(tag_id=tag.id, member_id=member.id, added_at=now)
    wechat_sim.clear_records()
    response = await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=admin)
    assert response.status == 202
    await run_tasks(app_client)
    assert [len(b) for b in batches(wechat_sim, "cgi-bin/tags/members/batchuntagging")] == [10]
    assert [len(b) for b in batches(wechat_sim, "cgi-bin/tags/members/batchtagging")] == [5]
    assert not wechat_sim.records("cgi-bin/tags/create")
    expected = {m.openid for m in [*members[1:10], *members[20:125]]}
    assert sim_tag(wechat_sim, synced.wechat_tag_id) == expected
    assert (await Segment.get(id=segment.id)).synced_count == len(expected)

    # Deleting the segment deletes its WeChat tag.
    assert (await app_client.delete(f"/api/admin/segments/{segment.id}", headers=admin)).status == 204
    await run_tasks(app_client)
    assert synced.wechat_tag_id not in wechat_sim.state.user_tags.of(OA)


async def test_the_100_tag_limit_fails_the_sync_with_a_clear_message(
    app_client: TestClient, shop: Merchant, wechat_sim: WeChatSim
) -> None:
    admin = await staff_headers(app_client, shop, "admin")
    await followers(wechat_sim, shop, 3)
    client = WeChatClient(aiohttp.ClientSession(), app_client.app[REDIS], wechat_sim.url)
    app = AppCredentials(OA, "shop-oa-secret")
    try:
        for n in range(100):
            await client.create_tag(app, f"标签{n}")
    finally:
        await client.session.close()
    segment = await Segment.create(
        merchant_id=shop.id, name="满了", expression={"attr": "subscribed", "op": "eq", "value": True}
    )
    wechat_sim.clear_records()
    assert (await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=admin)).status == 202
    await run_tasks(app_client)
    failed = await Segment.get(id=segment.id)
    assert failed.sync_status == "failed" and "100" in failed.sync_error
    assert not wechat_sim.records("cgi-bin/tags/create")
    assert not wechat_sim.records("cgi-bin/tags/members/batchtagging")


async def test_a_follower_at_20_tags_is_skipped_and_the_rest_tagged(
    app_client: TestClient, shop: Merchant, wechat_sim: WeChatSim
) -> None:
    admin = await staff_headers(app_client, shop, "admin")
    members = await followers(wechat_sim, shop, 5)
    for n in range(20):
        wechat_sim.state.user_tags.of(OA)[500 + n] = SimTag(500 + n, f"t{n}", {members[2].openid or ""})
    segment = await Segment.create(
        merchant_id=shop.id, name="全部", expression={"attr": "subscribed", "op": "eq", "value": True}
    )
    assert (await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=admin)).status == 202
    await run_tasks(app_client)
    synced = await Segment.get(id=segment.id)
    assert (synced.sync_status, synced.synced_count) == ("done", 4)
    assert synced.wechat_tag_id is not None
    assert sim_tag(wechat_sim, synced.wechat_tag_id) == {m.openid for m in members} - {members[2].openid}
    refused = [r for r in wechat_sim.records("cgi-bin/tags/members/batchtagging") if r["errcode"] == 45059]
    assert len(refused) == 2  # the batch of five, then that follower alone


async def test_sync_needs_an_official_account_and_the_admin_role(
    app_client: TestClient, wechat_sim: WeChatSim
) -> None:
    shop = await make_merchant("nooa", oa_appid="", oa_secret="")
    admin = await staff_headers(app_client, shop, "admin")
    segment = await Segment.create(merchant_id=shop.id, name="x", expression={"tag": 1})
    response = await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=admin)
    assert response.status == 409 and (await response.json())["error"]["field"] == "oa_appid"
    manager = await staff_headers(app_client, shop, "manager")
    assert (await app_client.post(f"/api/admin/segments/{segment.id}/sync", headers=manager)).status == 403


async def test_simulator_tag_endpoints_and_errcodes(app_client: TestClient, wechat_sim: WeChatSim) -> None:
    for n in range(3):
        wechat_sim.add_follower(OA, f"o-{n}")
    wechat_sim.add_follower(OA, "o-gone", following=False)
    client = WeChatClient(aiohttp.ClientSession(), app_client.app[REDIS], wechat_sim.url)
    app = AppCredentials(OA, "shop-oa-secret")
    try:
        first = await client.create_tag(app, "广东")
        with pytest.raises(Exception) as caught:
            await client.create_tag(app, "广东")
        assert getattr(caught.value, "errcode", None) == 45157
        await client.update_tag(app, first, "广东人")
        await client.tag_users(app, first, ["o-0", "o-1"])
        assert sorted((await client.tag_followers(app, first))[0]) == ["o-0", "o-1"]
        assert await client.user_tag_ids(app, "o-0") == [first]
        for openid, errcode in (("o-unknown", 40003), ("o-gone", 43004)):
            with pytest.raises(Exception) as caught:
                await client.tag_users(app, first, ["o-2", openid])
            assert getattr(caught.value, "errcode", None) == errcode
        assert "o-2" not in (await client.tag_followers(app, first))[0]  # the whole call failed
        await client.tag_users(app, first, ["o-0"], tag=False)
        assert (await client.tag_followers(app, first))[0] == ["o-1"]
        assert [(t.name, t.count) for t in await client.list_tags(app)] == [("广东人", 1)]
        with pytest.raises(ValidationError):
            await client.tag_users(app, first, [f"o-{n}" for n in range(51)])
        for n in range(99):
            await client.create_tag(app, f"t{n}")
        with pytest.raises(Exception) as caught:
            await client.create_tag(app, "one too many")
        assert getattr(caught.value, "errcode", None) == 45056
        await client.delete_tag(app, first)
        with pytest.raises(Exception) as caught:
            await client.delete_tag(app, first)
        assert getattr(caught.value, "errcode", None) == 45159
        with pytest.raises(Exception) as caught:
            await client.delete_tag(app, 2)
        assert getattr(caught.value, "errcode", None) == 45058
    finally:
        await client.session.close()
    # WeChat's own limit, straight at the simulator: 51 openids in one call.
    token = wechat_sim.state.token_for(wechat_sim.state.app(OA), force_refresh=False)[0]
    async with aiohttp.ClientSession() as session:
        body = {"openid_list": [f"o-{n}" for n in range(51)], "tagid": 100}
        url = f"{wechat_sim.url}/cgi-bin/tags/members/batchtagging?access_token={token}"
        async with session.post(url, json=body) as response:
            assert (await response.json())["errcode"] == 40032
