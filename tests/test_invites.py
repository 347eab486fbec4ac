"""Members' invite codes in the chat and on the invite page, against the simulator over real HTTP:
the 邀请 image and its cached ticket and media, renewal, permanent codes and their cap, one WeChat call
under concurrency, and a follow through a member's code crediting the referral end to end."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise import connections

from handlers.loyalty import config as loyalty_config
from handlers.members import invites
from handlers.staff.accounts import create_staff
from models.invite import InviteCode, InviteKind
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind, PointsTransaction
from tests.support.factories import AES_KEY, make_member, make_merchant, staff_headers
from tests.support.qr import encodes
from tests.support.wechat_push import WeChatPusher
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import BACKGROUND, RUNTIME, WECHAT
from webhooks.wechat import callback

OA, OA_SECRET = "wxshopoa", "shop-oa-secret"
CREATE, UPLOAD, CUSTOM = "cgi-bin/qrcode/create", "cgi-bin/media/upload", "cgi-bin/message/custom/send"
ALICE, BOB = "o-alice", "o-bob"


def answered(sim: WeChatSim, endpoint: str) -> list[dict[str, Any]]:
    """The calls WeChat carried out (not those refused, e.g. with a token that expired meanwhile)."""
    return [record for record in sim.records(endpoint) if record["errcode"] == 0]


@pytest.fixture
async def env(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    wechat_sim.add_app(OA, OA_SECRET)
    client = await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))
    shop = await make_merchant()
    for openid in (ALICE, BOB):
        wechat_sim.add_follower(OA, openid)
    return client, shop, WeChatPusher(client, "shop", "testtoken", AES_KEY, OA)


async def ask(pusher: WeChatPusher, openid: str = ALICE) -> Any:
    return await pusher.text(openid, "邀请", mode="safe")


async def test_invite_keyword_sends_the_qr_image_once_and_reuses_ticket_and_media(
    env: Any, wechat_sim: WeChatSim
) -> None:
    _, shop, pusher = env
    alice = await make_member(shop, openid=ALICE)
    first = await ask(pusher)
    assert first.type == "image" and first.media_id
    [created] = wechat_sim.records(CREATE)
    assert created["body"] == {
        "expire_seconds": 2_592_000,
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": f"ref_{alice.code}"}},
    }
    [uploaded] = wechat_sim.records(UPLOAD)
    assert uploaded["query"]["type"] == "image" and uploaded["body"]["content_type"] == "image/png"
    ticket = await InviteCode.get(merchant_id=shop.id, scene=f"ref_{alice.code}")
    assert wechat_sim.state.qrcodes[ticket.ticket]["scene"] == f"ref_{alice.code}"
    media = wechat_sim.state.media[first.media_id]
    assert encodes(media.data, ticket.url)  # the picture is the QR of the ticket's content
    again = await ask(pusher)
    menu = await pusher.event(ALICE, "CLICK", "MENU_INVITE")
    assert again.media_id == menu.media_id == first.media_id
    assert len(wechat_sim.records(CREATE)) == 1 and len(wechat_sim.records(UPLOAD)) == 1


async def test_a_temporary_code_is_renewed_a_week_before_it_lapses(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop, _ = env
    wechat = client.app[WECHAT]
    alice = await make_member(shop, openid=ALICE)
    now = datetime.now(UTC)
    first = await invites.member_code(wechat, shop, alice, now=now)
    assert (first.permanent, first.expires_at) == (False, now + timedelta(days=30))
    media = await invites.image_media(wechat, shop, first, now=now)
    later = await invites.member_code(wechat, shop, alice, now=now + timedelta(days=22))
    assert later.ticket == first.ticket and len(answered(wechat_sim, CREATE)) == 1
    wechat_sim.advance(23 * 86400 + 1)  # WeChat's clock moves with ours
    renewed = await invites.member_code(wechat, shop, alice, now=now + timedelta(days=23, seconds=1))
    assert renewed.ticket != first.ticket and len(answered(wechat_sim, CREATE)) == 2
    assert renewed.expires_at == now + timedelta(days=53, seconds=1)
    assert renewed.media_id == ""  # a new picture needs a new upload
    new_media = await invites.image_media(wechat, shop, renewed, now=now + timedelta(days=23, seconds=1))
    assert new_media != media and len(answered(wechat_sim, UPLOAD)) == 2
    # WeChat's side: the old ticket's picture is gone after 30 days, the new one is still shown.
    wechat_sim.advance(7 * 86400)
    async with wechat.session.get(wechat.showqrcode_url(first.ticket)) as old:
        assert old.status == 404
    async with wechat.session.get(wechat.showqrcode_url(renewed.ticket)) as new:
        assert new.status == 200 and new.content_type == "image/png"
        assert (await new.read()).startswith(b"\x89PNG")


async def test_media_is_uploaded_again_when_wechat_is_about_to_forget_it(
    env: Any, wechat_sim: WeChatSim
) -> None:
    client, shop, _ = env
    wechat = client.app[WECHAT]
    code = await invites.member_code(
        wechat, shop, await make_member(shop, openid=ALICE), now=datetime.now(UTC)
    )
    now = datetime.now(UTC)
    first = await invites.image_media(wechat, shop, code, now=now)
    assert await invites.image_media(wechat, shop, code, now=now + timedelta(hours=70)) == first
    second = await invites.image_media(wechat, shop, code, now=now + timedelta(hours=71, seconds=1))
    assert second != first and len(wechat_sim.records(UPLOAD)) == 2


async def test_concurrent_asks_make_one_wechat_call(env: Any, wechat_sim: WeChatSim) -> None:
    client, shop, _ = env
    wechat = client.app[WECHAT]
    alice = await make_member(shop, openid=ALICE)
    now = datetime.now(UTC)
    codes = await asyncio.gather(*(invites.member_code(wechat, shop, alice, now=now) for _ in range(8)))
    assert len({c.ticket for c in codes}) == 1 and len(wechat_sim.records(CREATE)) == 1
    media = await asyncio.gather(*(invites.image_media(wechat, shop, codes[0], now=now) for _ in range(8)))
    assert len(set(media)) == 1 and len(wechat_sim.records(UPLOAD)) == 1
    assert await InviteCode.filter(merchant_id=shop.id).count() == 1


async def test_permanent_codes_per_the_merchant_and_kept_when_it_switches_back(
    env: Any, wechat_sim: WeChatSim
) -> None:
    client, shop, _ = env
    wechat = client.app[WECHAT]
    alice, bob = await make_member(shop, openid=ALICE), await make_member(shop, openid=BOB)
    now = datetime.now(UTC)
    temporary = await invites.member_code(wechat, shop, alice, now=now)
    admin = await staff_headers(client, shop, "admin")
    answer = await client.put("/api/admin/invite/settings", json={"permanent": True}, headers=admin)
    assert answer.status == 200 and (await answer.json())["permanent"] is True
    assert await AuditLog.filter(merchant_id=shop.id, action="invite.settings").count() == 1
    shop = await Merchant.get(id=shop.id)
    upgraded = await invites.member_code(wechat, shop, alice, now=now)
    assert upgraded.permanent and upgraded.expires_at is None and upgraded.ticket != temporary.ticket
    assert wechat_sim.records(CREATE)[-1]["body"] == {
        "action_name": "QR_LIMIT_STR_SCENE",
        "action_info": {"scene": {"scene_str": f"ref_{alice.code}"}},
    }
    settings = await (await client.get("/api/admin/invite/settings", headers=admin)).json()
    assert settings == {"permanent": True, "permanent_used": 1, "permanent_limit": 100_000}
    await client.put("/api/admin/invite/settings", json={"permanent": False}, headers=admin)
    shop = await Merchant.get(id=shop.id)
    kept = await invites.member_code(wechat, shop, alice, now=now + timedelta(days=400))
    assert kept.ticket == upgraded.ticket
    assert not (await invites.member_code(wechat, shop, bob, now=now)).permanent
    assert len(wechat_sim.records(CREATE)) == 3


async def test_past_the_permanent_cap_members_get_temporary_codes(
    env: Any, wechat_sim: WeChatSim, caplog: pytest.LogCaptureFixture
) -> None:
    client, shop, _ = env
    wechat = client.app[WECHAT]
    await Merchant.filter(id=shop.id).update(invite_qr_permanent=True)
    shop = await Merchant.get(id=shop.id)
    alice, bob = await make_member(shop, openid=ALICE), await make_member(shop, openid=BOB)
    now = datetime.now(UTC)
    # WeChat refuses (codes made outside memberbot count too): a temporary code, logged, remembered.
    wechat_sim.state.permanent_qr_limit = 0
    with caplog.at_level(logging.WARNING):
        code = await invites.member_code(wechat, shop, alice, now=now)
    assert not code.permanent and code.expires_at == now + timedelta(days=30)
    assert [r["errcode"] for r in wechat_sim.records(CREATE)] == [45029, 0]
    assert any("45029" in r.getMessage() for r in caplog.records)
    assert (await invites.member_code(wechat, shop, alice, now=now)).ticket == code.ticket
    assert len(wechat_sim.records(CREATE)) == 2  # the refusal is not asked again
    # memberbot's own count: members stop 1,000 short of WeChat's 100,000 (kept for staff codes).
    await client.app[WECHAT].redis.delete(f"invite:permanent-full:{OA}:100000")  # forget the refusal
    wechat_sim.state.permanent_qr_limit = 100_000
    await connections.get("default").execute_query(
        "INSERT INTO invite_code (merchant_id, kind, scene, appid, permanent, ticket, url, media_id,"
        " created_at, updated_at) SELECT $1, 'oa_qr', 'seed_' || g, $2, TRUE, 't' || g, 'u', '', now(),"
        " now() FROM generate_series(1, $3::int) g",
        [shop.id, OA, invites.MEMBER_PERMANENT_LIMIT],
    )
    wechat_sim.clear_records()
    assert not (await invites.member_code(wechat, shop, bob, now=now)).permanent
    assert [r["body"]["action_name"] for r in wechat_sim.records(CREATE)] == ["QR_STR_SCENE"]
    # The last thousand are kept for staff codes, which are printed and must not lapse.
    amy = await create_staff(
        shop, store_code="main", username="amy", role="cashier", password="correct-horse-1"
    )
    staff = await invites.staff_code(wechat, shop, amy, now=now, actor="test")
    assert staff.permanent and [r["body"]["action_name"] for r in wechat_sim.records(CREATE)][-1] == (
        "QR_LIMIT_STR_SCENE"
    )


async def test_a_follow_through_a_members_code_credits_the_referral_end_to_end(
    env: Any, wechat_sim: WeChatSim
) -> None:
    client, shop, pusher = env
    await loyalty_config.save_program(
        shop.id, {"referral": {"trigger": "registration", "level_points": [50]}}, actor="test"
    )
    await pusher.event(ALICE, "subscribe")
    alice = await Member.get(merchant_id=shop.id, openid=ALICE)
    image = await ask(pusher)
    assert image.type == "image"
    ticket = next(t for t, qr in wechat_sim.state.qrcodes.items() if qr["scene"] == f"ref_{alice.code}")
    # Bob scans it while not following: WeChat pushes subscribe with qrscene_<scene> and the ticket.
    welcome = await pusher.event(BOB, "subscribe", f"qrscene_ref_{alice.code}", ticket=ticket)
    assert welcome.type == "text" and "欢迎" in welcome.content
    bob = await Member.get(merchant_id=shop.id, openid=BOB)
    assert bob.referrer_id == alice.id
    earned = await PointsTransaction.filter(member_id=alice.id, kind=PointsKind.EARN_REFERRAL)
    assert [t.delta for t in earned] == [50]
    # Alice's invite page shows it.
    token = invites.page_token(client.app[RUNTIME].secret, shop.id, alice.id, now=datetime.now(UTC))
    page = await client.get(f"/invite/shop?t={token}")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert "<b>1</b><span>已邀请</span>" in html and "<b>50</b><span>推荐积分</span>" in html
    qr_src = re.search(r'<img class="qr" src="([^"]+)"', html)
    assert qr_src is not None
    picture = await client.get(qr_src.group(1).replace("&amp;", "&"))
    assert picture.status == 200 and picture.content_type == "image/png"
    code = await InviteCode.get(merchant_id=shop.id, kind=InviteKind.OA_QR, scene=f"ref_{alice.code}")
    assert encodes(await picture.read(), code.url)
    assert len(wechat_sim.records(CREATE)) == 1  # the page reused the chat's code


async def test_invite_page_links_are_checked(env: Any) -> None:
    client, shop, _ = env
    alice = await make_member(shop, openid=ALICE)
    secret = client.app[RUNTIME].secret
    from handlers.members import member_qr

    card_token = member_qr.link_token(secret, shop.id, alice.id, now=datetime.now(UTC))
    refused = await client.get(f"/invite/shop?t={card_token}")
    assert refused.status == 403 and "重新发送“邀请”" in await refused.text()
    stale = invites.page_token(secret, shop.id, alice.id, now=datetime.now(UTC) - timedelta(days=2))
    assert (await client.get(f"/invite/shop?t={stale}")).status == 403
    assert (await client.get(f"/invite/shop/qr.png?t={stale}")).status == 403
    assert (await client.get("/invite/nowhere?t=x")).status == 404
    # An erased member's link, still unexpired, opens nothing.
    await Member.filter(id=alice.id).update(anonymized_at=datetime.now(UTC))
    fresh = invites.page_token(secret, shop.id, alice.id, now=datetime.now(UTC))
    erased = await client.get(f"/invite/shop?t={fresh}")
    assert erased.status == 403 and "重新发送“邀请”" in await erased.text()


async def test_a_failed_upload_answers_with_a_link_to_the_invite_page(
    env: Any, wechat_sim: WeChatSim
) -> None:
    client, shop, pusher = env
    await make_member(shop, openid=ALICE)
    wechat_sim.inject_error(UPLOAD, 40005, "invalid file type")
    reply = await ask(pusher)
    assert reply.type == "text" and "专属邀请二维码" in reply.content
    link = re.search(r"http://testserver(/invite/shop\?t=\S+)", reply.content)
    assert link is not None and "有效期至" in reply.content
    page = await client.get(link.group(1))
    assert page.status == 200 and "<b>0</b><span>已邀请</span>" in await page.text()


async def test_polite_replies_for_strangers_and_merchants_without_an_account(
    env: Any, wechat_sim: WeChatSim, aiohttp_client: Any
) -> None:
    client, shop, pusher = env
    stranger = await ask(pusher, "o-stranger")
    assert stranger.type == "text" and "回复“注册”" in stranger.content
    await make_merchant("chat-only", oa_appid="", oa_secret="")
    member = await make_member(await Merchant.get(slug="chat-only"), openid=ALICE)
    chat_only = WeChatPusher(client, "chat-only", "testtoken", AES_KEY, "")
    reply = await chat_only.text(member.openid or "", "邀请")
    assert reply.type == "text" and "暂未开通邀请二维码" in reply.content
    wechat_sim.inject_error(CREATE, -1, "system error")
    await make_member(shop, openid=BOB)
    failed = await ask(pusher, BOB)
    assert failed.type == "text" and "稍后" in failed.content
    assert wechat_sim.records(UPLOAD) == []


async def test_a_late_invite_goes_out_as_a_customer_service_image(
    env: Any, wechat_sim: WeChatSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, shop, _ = env
    monkeypatch.setattr(callback, "REPLY_DEADLINE", 0.0)
    await make_member(shop, openid=ALICE)
    wechat_sim.interact(OA, ALICE)
    reply = await WeChatPusher(client, "shop", "testtoken", "", OA).text(ALICE, "邀请")
    assert reply.empty
    await client.app[BACKGROUND].drain(grace=5)
    [sent] = wechat_sim.records(CUSTOM)
    assert sent["errcode"] == 0 and sent["body"]["msgtype"] == "image"
    assert sent["body"]["image"]["media_id"] in wechat_sim.state.media
