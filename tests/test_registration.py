from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.dialog.state import DialogStore
from handlers import effects
from handlers.core.chat import IncomingMessage, TextReply
from handlers.core.errors import ValidationError
from handlers.core.tasks import Effects
from handlers.members import lookup as members
from handlers.members import registration
from handlers.staff.accounts import create_staff
from handlers.staff.merchants import MerchantInput, create_merchant
from models.member import Gender, Member, MemberSource
from models.merchant import Merchant
from models.staff import Staff
from models.task import Task, TaskStatus
from tests.conftest import SECRET
from tests.support.factories import EFFECTS, effects_done
from tests.support.wechat_push import WeChatPusher
from webhooks.appkeys import DISPATCHER, REDIS

ALICE, BOB, CAROL = "o-alice-000000000000000001", "o-bob-00000000000000000002", "o-carol-000000000000000003"


def event(name: str, openid: str, key: str = "") -> IncomingMessage:
    now = datetime.now(UTC)
    return IncomingMessage(openid=openid, kind="event", created_at=now, event=name, event_key=key)


async def merchant(slug: str = "cafe") -> Merchant:
    return await create_merchant(MerchantInput(slug=slug, name="街角咖啡" if slug == "cafe" else "美发沙龙"))


@pytest.fixture
async def app(aiohttp_client: Any, make_app: Any) -> Any:
    return (await aiohttp_client(make_app())).app


async def registered() -> list[int]:
    """Member ids whose `member.registered` effect ran."""
    return [payload["member_id"] for payload in await effects_done(members.MEMBER_REGISTERED)]


async def follow(app: Any, shop: Merchant, openid: str, scene: str = "") -> str:
    reply = await app[DISPATCHER].dispatch(shop, event("subscribe", openid, scene))
    assert isinstance(reply, TextReply)
    return reply.text


async def unfollow(app: Any, shop: Merchant, openid: str) -> None:
    assert await app[DISPATCHER].dispatch(shop, event("unsubscribe", openid)) is None


async def get(shop: Merchant, openid: str) -> Member:
    return await Member.get(merchant_id=shop.id, openid=openid)


async def test_subscribe_creates_a_subscribed_member_and_welcomes_with_its_code(
    app: Any,
) -> None:
    shop = await merchant()
    reply = await follow(app, shop, ALICE)
    member = await get(shop, ALICE)
    assert member.code in reply and "欢迎关注街角咖啡" in reply and "注册" in reply
    assert member.subscribed and member.source == MemberSource.OA_SUBSCRIBE
    assert member.openid_digest == members.openid_digest(SECRET.encode(), shop.id, ALICE)
    assert member.referrer_id is None and member.acquired_by_id is None
    assert await registered() == [member.id]


async def test_twenty_concurrent_subscribe_deliveries_make_one_member(
    app: Any,
) -> None:
    shop = await merchant()
    replies = await asyncio.gather(
        *(app[DISPATCHER].dispatch(shop, event("subscribe", ALICE)) for _ in range(20))
    )
    member = await get(shop, ALICE)
    assert await Member.filter(merchant_id=shop.id).count() == 1
    assert all(isinstance(r, TextReply) and member.code in r.text for r in replies)
    assert await registered() == [member.id]


@pytest.mark.parametrize("prefix", ["", "qrscene_"])
async def test_referral_scene_records_the_referrer(app: Any, prefix: str) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    alice = await get(shop, ALICE)
    await follow(app, shop, BOB, f"{prefix}ref_{alice.code.lower()}")
    bob = await get(shop, BOB)
    assert bob.referrer_id == alice.id and bob.source == MemberSource.OA_REFERRAL


async def test_twenty_concurrent_referral_deliveries_make_one_referred_member(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    alice = await get(shop, ALICE)
    await asyncio.gather(
        *(app[DISPATCHER].dispatch(shop, event("subscribe", BOB, f"ref_{alice.code}")) for _ in range(20))
    )
    assert await Member.filter(merchant_id=shop.id, referrer_id=alice.id).count() == 1


async def test_self_referral_is_ignored(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    alice = await get(shop, ALICE)
    await unfollow(app, shop, ALICE)
    await follow(app, shop, ALICE, f"ref_{alice.code}")
    assert (await get(shop, ALICE)).referrer_id is None


async def test_referral_by_another_merchants_member_is_ignored(app: Any) -> None:
    cafe, salon = await merchant(), await merchant("salon")
    await follow(app, salon, ALICE)
    stranger = await get(salon, ALICE)
    await follow(app, cafe, BOB, f"ref_{stranger.code}")
    bob = await get(cafe, BOB)
    assert bob.referrer_id is None and bob.source == MemberSource.OA_SUBSCRIBE


async def test_referral_by_an_anonymised_member_is_ignored(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    alice = await get(shop, ALICE)
    await Member.filter(id=alice.id).update(anonymized_at=datetime.now(UTC))
    await follow(app, shop, BOB, f"ref_{alice.code}")
    assert (await get(shop, BOB)).referrer_id is None


async def test_referrer_is_never_changed(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    await follow(app, shop, BOB)
    alice, bob = await get(shop, ALICE), await get(shop, BOB)
    await follow(app, shop, CAROL, f"ref_{alice.code}")
    await unfollow(app, shop, CAROL)
    await follow(app, shop, CAROL, f"ref_{bob.code}")
    reply = await app[DISPATCHER].dispatch(shop, event("scan", CAROL, f"ref_{bob.code}"))
    carol = await get(shop, CAROL)
    assert carol.referrer_id == alice.id and carol.source == MemberSource.OA_REFERRAL
    assert isinstance(reply, TextReply) and carol.code in reply.text


async def test_scan_by_a_follower_never_attributes(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    await follow(app, shop, BOB)
    alice = await get(shop, ALICE)
    staff = await create_staff(shop, store_code="main", username="amy", role="cashier", password="p4ssword!")
    for scene in (f"ref_{alice.code}", f"staff_{staff.id}"):
        await app[DISPATCHER].dispatch(shop, event("scan", BOB, scene))
    bob = await get(shop, BOB)
    assert (bob.referrer_id, bob.acquired_by_id, bob.source) == (None, None, MemberSource.OA_SUBSCRIBE)


async def test_scan_by_an_unknown_follower_creates_the_member(app: Any) -> None:
    shop = await merchant()
    reply = await app[DISPATCHER].dispatch(shop, event("scan", ALICE, "staff_1"))
    member = await get(shop, ALICE)
    assert isinstance(reply, TextReply) and member.code in reply.text
    assert member.subscribed and member.acquired_by_id is None


async def test_staff_scene_records_the_acquiring_staff(app: Any) -> None:
    cafe, salon = await merchant(), await merchant("salon")
    amy = await create_staff(cafe, store_code="main", username="amy", role="cashier", password="p4ssword!")
    gone = await create_staff(cafe, store_code="main", username="gone", role="cashier", password="p4ssword!")
    await Staff.filter(id=gone.id).update(active=False)
    elsewhere = await create_staff(salon, store_code=None, username="zed", role="admin", password="p4ssword!")
    await follow(app, cafe, ALICE, f"staff_{amy.id}")
    await follow(app, cafe, BOB, f"staff_{gone.id}")
    await follow(app, cafe, CAROL, f"staff_{elsewhere.id}")
    alice, bob, carol = await get(cafe, ALICE), await get(cafe, BOB), await get(cafe, CAROL)
    assert (alice.acquired_by_id, alice.source) == (amy.id, MemberSource.OA_STAFF)
    assert alice.store_id is not None and alice.store_id == amy.store_id  # the acquiring store
    assert (bob.acquired_by_id, bob.source, bob.store_id) == (None, MemberSource.OA_SUBSCRIBE, None)
    assert (carol.acquired_by_id, carol.source) == (None, MemberSource.OA_SUBSCRIBE)


@pytest.mark.parametrize("scene", ["0", "ref_", "ref_!!", "staff_abc", "staff_0", "promo_2024", "qrscene_0"])
async def test_malformed_scenes_are_ignored_and_the_member_is_created(app: Any, scene: str) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE, scene)
    alice = await get(shop, ALICE)
    assert (alice.referrer_id, alice.acquired_by_id, alice.source) == (None, None, MemberSource.OA_SUBSCRIBE)


async def test_unsubscribe_detaches_the_openid_and_drops_the_dialog(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    await app[DISPATCHER].dispatch(shop, IncomingMessage(ALICE, "text", datetime.now(UTC), content="注册"))
    assert await app[REDIS].get(DialogStore.key(shop.id, ALICE)) is not None
    member_id = (await get(shop, ALICE)).id
    await unfollow(app, shop, ALICE)
    await unfollow(app, shop, ALICE)  # WeChat's retry finds nobody and does not fail
    member = await Member.get(id=member_id)
    assert (member.openid, member.subscribed) == (None, False)
    assert member.unsubscribed_at is not None and member.anonymized_at is None
    assert member.openid_digest == members.openid_digest(SECRET.encode(), shop.id, ALICE)
    assert await app[REDIS].get(DialogStore.key(shop.id, ALICE)) is None


async def test_resubscribe_restores_the_same_member(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    before = await get(shop, ALICE)
    await registration.complete_profile(
        before,
        now=datetime.now(UTC),
        phone="13800138000",
        birthday=date(1990, 5, 20),
        gender=Gender.MALE,
        effects=EFFECTS,
    )
    await unfollow(app, shop, ALICE)
    replies = await asyncio.gather(*(follow(app, shop, ALICE) for _ in range(20)))
    after = await get(shop, ALICE)
    assert (after.id, after.code, after.phone) == (before.id, before.code, "13800138000")
    assert after.subscribed and after.unsubscribed_at is None
    assert await Member.filter(merchant_id=shop.id).count() == 1
    assert all("欢迎回来" in reply and before.code in reply for reply in replies)
    assert await registered() == [before.id]


async def test_anonymised_member_following_again_is_a_new_member(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    old = await get(shop, ALICE)
    await unfollow(app, shop, ALICE)
    await Member.filter(id=old.id).update(anonymized_at=datetime.now(UTC), openid_digest=None)
    reply = await follow(app, shop, ALICE)
    new = await get(shop, ALICE)
    assert new.id != old.id and new.code != old.code and "欢迎关注" in reply


async def test_profile_completed_effect_runs_once_and_a_failure_is_retried(app: Any) -> None:
    """The effect of the first completion runs right after commit; when it fails the profile stands
    and the task is due again after a backoff, then runs once; a second completion queues nothing."""
    shop = await merchant()
    await follow(app, shop, ALICE)
    member = await get(shop, ALICE)
    calls: list[int] = []

    async def flaky(registry: Effects, payload: Any, now: datetime) -> None:
        calls.append(payload["member_id"])
        if len(calls) == 1:
            raise RuntimeError("points service down")

    flaky_effects = Effects(
        {**effects.build().handlers, registration.PROFILE_COMPLETED: flaky}, inline=effects.INLINE
    )
    with pytest.raises(ValidationError):
        await registration.complete_profile(
            member, now=datetime.now(UTC), phone="13800138000", effects=flaky_effects
        )
    now = datetime.now(UTC)
    assert await registration.complete_profile(
        member,
        now=now,
        phone="13800138000",
        birthday=date(1990, 5, 20),
        gender=Gender.FEMALE,
        effects=flaky_effects,
    )
    assert calls == [member.id]
    task = await Task.get(kind=registration.PROFILE_COMPLETED)
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 1) and task.run_after > now
    assert "points service down" in task.last_error
    assert not await registration.complete_profile(
        member, now=now, gender=Gender.UNDISCLOSED, effects=flaky_effects
    )
    assert await flaky_effects.run_due(now) == {
        "done": 0,
        "failed": 0,
        "deferred": 0,
    }  # not due before its backoff
    assert await flaky_effects.run_due(now + timedelta(hours=1)) == {"done": 1, "failed": 0, "deferred": 0}
    assert calls == [member.id, member.id]
    assert await Task.filter(kind=registration.PROFILE_COMPLETED).count() == 1
    stored = await Member.get(id=member.id)
    assert stored.gender == Gender.UNDISCLOSED and stored.profile_completed_at is not None


async def test_subscribe_reports_created_and_restored(app: Any) -> None:
    shop, secret = await merchant(), SECRET.encode()
    first = await registration.subscribe(shop, ALICE, "", secret=secret, effects=EFFECTS)
    again = await registration.subscribe(shop, ALICE, "", secret=secret, effects=EFFECTS)
    await registration.unsubscribe(shop, ALICE, secret=secret, now=datetime.now(UTC))
    back = await registration.subscribe(shop, ALICE, "", secret=secret, effects=EFFECTS)
    flags = [(s.created, s.restored) for s in (first, again, back)]
    assert flags == [(True, False), (False, False), (False, True)]
    assert first.member.id == again.member.id == back.member.id


async def test_follow_register_and_unfollow_through_the_webhook(client: Any) -> None:
    shop = await create_merchant(
        MerchantInput(
            slug="shop",
            name="小店",
            oa_appid="wxshop00000000001",
            oa_secret="s",
            oa_token="shoptoken",
            oa_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        )
    )
    pusher = WeChatPusher(
        client, "shop", "shoptoken", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxshop00000000001"
    )
    await pusher.event(ALICE, "subscribe", mode="safe")
    alice = await get(shop, ALICE)
    welcome = await pusher.event(
        BOB, "subscribe", f"qrscene_ref_{alice.code}", mode="safe", ticket="gQH47joAAAAAAAAAASxodHRw"
    )
    bob = await get(shop, BOB)
    assert welcome.type == "text" and bob.code in welcome.content and "欢迎关注小店" in welcome.content
    assert bob.referrer_id == alice.id and bob.source == MemberSource.OA_REFERRAL
    answers = ["注册", "13800138000", "1990-05-20", "男"]
    replies = [(await pusher.text(BOB, answer, mode="compat")).content for answer in answers]
    assert "手机号" in replies[0] and "生日" in replies[1] and "性别" in replies[2]
    assert bob.code in replies[3] and "资料已完善" in replies[3]
    image = (
        f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[{BOB}]]>"
        f"</FromUserName><CreateTime>{pusher.next_create_time()}</CreateTime><MsgType><![CDATA[image]]>"
        "</MsgType><PicUrl><![CDATA[http://mmbiz.qpic.cn/x]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>"
        "<MsgId>6123456789012345678</MsgId></xml>"
    )
    assert "暂时只能理解文字消息" in (await pusher.push(image, openid=BOB)).content
    gone = await pusher.event(BOB, "unsubscribe", mode="safe")
    assert gone.empty
    bob = await Member.get(id=bob.id)
    assert (bob.openid, bob.subscribed, bob.phone) == (None, False, "13800138000")


async def test_a_returning_follower_gains_no_referrer(app: Any) -> None:
    shop = await merchant()
    await follow(app, shop, ALICE)
    await follow(app, shop, BOB)
    bob = await get(shop, BOB)
    await unfollow(app, shop, ALICE)
    await follow(app, shop, ALICE, f"ref_{bob.code}")  # re-follows through a friend's code
    assert (await get(shop, ALICE)).referrer_id is None
