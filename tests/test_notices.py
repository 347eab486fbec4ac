"""Member notices end to end: a till purchase's receipt reaches the simulator once, on the channel the
merchant chose and WeChat's rules allow, with a delivery record of what happened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from fakeredis.aioredis import FakeRedis

from handlers.coupons.issue import issue
from handlers.jobs import run_job
from handlers.notices import reach
from handlers.notices import settings as notice_settings
from handlers.notices.delivery import NOTICE_SEND, tell
from models.coupon import CouponKind, CouponTemplate
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery
from models.task import Task, TaskStatus
from tests.support.factories import AES_KEY, make_member, make_merchant, staff_headers
from tests.support.wechat_push import WeChatPusher, event_xml
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import BACKGROUND, EFFECTS, REDIS

RECEIPT_FIELDS = {"amount1": "{{ paid }}元", "thing2": "{{ merchant_name }}", "number3": "{{ points }}"}


async def shop(wechat_sim: WeChatSim, **settings: Any) -> Merchant:
    merchant = await make_merchant("shop")
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    wechat_sim.add_app(merchant.mp_appid, merchant.mp_secret)
    wechat_sim.add_template(merchant.oa_appid, "TPL-RECEIPT", tuple(RECEIPT_FIELDS))
    wanted = {"template_id": "TPL-RECEIPT", "template_fields": RECEIPT_FIELDS, **settings}
    await notice_settings.save(merchant, "purchase_receipt", wanted, actor="test")
    return merchant


async def follower(merchant: Merchant, wechat_sim: WeChatSim, openid: str = "o-alice") -> Member:
    wechat_sim.add_follower(merchant.oa_appid, openid)
    return await make_member(merchant, openid=openid)


async def settled(client: Any) -> list[NoticeDelivery]:
    """The delivery records once their send tasks have run: with real Redis they wait for a worker
    (arq), so the test runs what is due itself, as the worker would (at most 15 s). With in-process Redis
    the app's own background run of them comes first."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        await client.app[BACKGROUND].drain()
        ran = sum((await client.app[EFFECTS].run_due(datetime.now(UTC))).values())
        rows = await NoticeDelivery.all().order_by("id")
        sending = [r for r in rows if r.status == DeliveryStatus.SENDING]
        queued = [r for r in rows if r.status == DeliveryStatus.QUEUED]
        running = await Task.filter(kind=NOTICE_SEND, status=TaskStatus.RUNNING).exists()  # in the background
        if (
            not sending and not running and (not queued or not ran)
        ) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def buy(client: Any, headers: dict[str, str], member: Member, key: str, amount: int = 12_800) -> Any:
    body = {"idempotency_key": key, "member_id": member.id, "amount_fen": amount}
    response = await client.post("/api/staff/purchases", json=body, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def test_a_purchase_at_the_till_sends_exactly_one_receipt(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    headers = await staff_headers(started, merchant)
    first = await buy(started, headers, member, "r-1")
    again = await buy(started, headers, member, "r-1")  # the till retries: a replay, no second receipt
    assert again["purchase_id"] == first["purchase_id"]
    [delivery] = await settled(started)
    sent = [r for r in wechat_sim.records("cgi-bin/message/template/send") if r["errcode"] == 0]
    assert len(sent) == 1
    body = sent[0]["body"]
    assert body["touser"] == "o-alice" and body["template_id"] == "TPL-RECEIPT"
    assert body["data"] == {
        "amount1": {"value": "128.00元"},
        "thing2": {"value": "shop 门店"},
        "number3": {"value": "128"},
    }
    assert body["client_msg_id"] == f"notice-{delivery.id}"
    assert (delivery.status, delivery.channel, delivery.kind) == (
        DeliveryStatus.SENT,
        "template",
        "purchase_receipt",
    )
    assert delivery.msgid is not None and delivery.text == "128.00元 / shop 门店 / 128"


async def test_no_usable_channel_is_skipped_with_every_reason(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim, channels=["subscribe", "custom"])
    member = await make_member(merchant, openid="o-bob")
    await Member.filter(id=member.id).update(subscribed=False)
    headers = await staff_headers(started, merchant)
    await buy(started, headers, member, "r-2")
    [delivery] = await settled(started)
    assert delivery.status == DeliveryStatus.SKIPPED
    assert delivery.reason == "subscribe:no_subscribe_template_configured;custom:not_following"
    assert wechat_sim.records("cgi-bin/message/custom/send") == []


async def test_the_member_refusing_one_channel_falls_back_to_the_next(
    started: Any, wechat_sim: WeChatSim
) -> None:
    """WeChat says 43004 (not following any more): the customer-service message inside the member's
    48-hour window carries the receipt instead; the record keeps the refusal."""
    merchant = await shop(wechat_sim, channels=["template", "custom"])
    member = await follower(merchant, wechat_sim)
    wechat_sim.interact(merchant.oa_appid, "o-alice")
    await reach.window_opened(started.app[REDIS], merchant.id, "o-alice", datetime.now(UTC))
    wechat_sim.inject_error("cgi-bin/message/template/send", 43004, "require subscribe")
    await buy(started, await staff_headers(started, merchant), member, "r-3")
    [delivery] = await settled(started)
    assert (delivery.status, delivery.channel) == (DeliveryStatus.SENT, "custom")
    assert delivery.reason == "template:43004" and delivery.errcode == 43004
    [custom] = [r for r in wechat_sim.records("cgi-bin/message/custom/send") if r["errcode"] == 0]
    assert custom["body"]["text"]["content"].startswith("【shop 门店】消费 128.00 元")


async def test_wechat_busy_is_retried_until_it_is_sent_once(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    wechat_sim.inject_error("cgi-bin/message/template/send", 45009, "reach max api daily quota limit")
    await buy(started, await staff_headers(started, merchant), member, "r-4")
    [delivery] = await settled(started)
    assert delivery.status == DeliveryStatus.QUEUED  # its task waits out a backoff
    registry = started.app[EFFECTS]
    await registry.run_due(datetime.now(UTC) + timedelta(minutes=5))
    [delivery] = await settled(started)
    assert delivery.status == DeliveryStatus.SENT
    attempts = wechat_sim.records("cgi-bin/message/template/send")
    assert [r["errcode"] for r in attempts] == [45009, 0]


async def grant_points(client: Any, merchant: Merchant, member: Member, delta: int, key: str) -> None:
    headers = await staff_headers(client, merchant, role="admin", username=f"admin-{key}")
    body = {"delta": delta, "reason": "活动补发", "idempotency_key": key}
    response = await client.post(f"/api/admin/members/{member.code}/points", json=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_quiet_hours_defer_what_is_not_urgent_until_they_end(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    await notice_settings.save(
        merchant,
        "points_credited",
        {"template_id": "TPL-RECEIPT", "template_fields": RECEIPT_FIELDS | {"amount1": "{{ points }}"}},
        actor="test",
    )
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)  # none first
    member = await follower(merchant, wechat_sim)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)  # tasks queued now are due by then
    night = datetime.combine(tomorrow, time(15, 0), tzinfo=UTC)  # 23:00 in Shanghai
    await notice_settings.set_quiet_hours(merchant, time(22, 0), time(8, 0), actor="test")
    registry = started.app[EFFECTS]
    registry.clock = lambda: night
    try:
        await grant_points(started, merchant, member, 30, "g-night")
        [delivery] = await NoticeDelivery.all()
        await started.app[BACKGROUND].drain()  # in-process Redis: the app's own run comes first
        await registry.run_due(night)
        delivery = await NoticeDelivery.get(id=delivery.id)
        assert delivery.status == DeliveryStatus.DEFERRED and delivery.reason == "quiet_hours"
        assert delivery.run_after is not None and delivery.run_after == night + timedelta(hours=9)
        await registry.run_due(night + timedelta(hours=8, minutes=59))
        assert (await NoticeDelivery.get(id=delivery.id)).status == DeliveryStatus.DEFERRED
        assert wechat_sim.records("cgi-bin/message/template/send") == []
        morning = night + timedelta(hours=9)  # 08:00 in Shanghai
        await registry.run_due(morning)
        assert (await NoticeDelivery.get(id=delivery.id)).status == DeliveryStatus.SENT
        assert len(wechat_sim.records("cgi-bin/message/template/send")) == 1
    finally:
        registry.clock = lambda: datetime.now(UTC)


async def test_a_subscribe_grant_carries_one_notice_and_43101_consumes_nothing_twice(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(
        wechat_sim,
        channels=["subscribe"],
        subscribe_template_id="SUB-RECEIPT",
        subscribe_fields={"amount1": "{{ paid }}元", "thing2": "{{ merchant_name }}"},
    )
    wechat_sim.add_template(merchant.mp_appid, "SUB-RECEIPT", ("amount1", "thing2"))
    member = await make_member(merchant, openid="o-oa-c")
    await Member.filter(id=member.id).update(mp_openid="o-mp-c")
    wechat_sim.add_follower(merchant.mp_appid, "o-mp-c")
    wechat_sim.grant(merchant.mp_appid, "o-mp-c", "SUB-RECEIPT", 1)
    token = await mp_token(started, merchant, member)
    reported = await started.post(
        f"/api/mp/{merchant.slug}/subscriptions",
        json={"accepted": ["SUB-RECEIPT"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (await reported.json()) == {"unused": {"SUB-RECEIPT": 1}}
    headers = await staff_headers(started, merchant)
    await buy(started, headers, member, "s-1")
    await buy(started, headers, member, "s-2")
    first, second = await settled(started)
    assert (first.status, first.channel) == (DeliveryStatus.SENT, "subscribe")
    assert (second.status, second.reason) == (DeliveryStatus.SKIPPED, "subscribe:no_subscribe_grant")
    # Our count says one grant, WeChat knows none (the member used it elsewhere): 43101, and the grant
    # is gone — no retry takes a second one.
    await reach.record_grants(member, ["SUB-RECEIPT"], [])
    await buy(started, headers, member, "s-3")
    *_, third = await settled(started)
    assert (third.status, third.errcode) == (DeliveryStatus.FAILED, 43101)
    assert await reach.unused_grants(member.id, "SUB-RECEIPT") == 0
    sent = [r for r in wechat_sim.records("cgi-bin/message/subscribe/send")]
    assert [r["errcode"] for r in sent] == [0, 43101]


async def mp_token(client: Any, merchant: Merchant, member: Member) -> str:
    from handlers.staff.sessions import SessionKind, SessionStore

    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, merchant.id, member.id, data={})
    return issued.token


async def test_a_send_cut_off_by_a_crash_is_never_sent_twice(started: Any, wechat_sim: WeChatSim) -> None:
    """The process died after marking the record `sending`: a template message is sent again under the
    same client_msg_id (WeChat keeps one), a customer-service one is failed, not repeated."""
    merchant = await shop(wechat_sim, channels=["template"])
    member = await follower(merchant, wechat_sim)
    headers = await staff_headers(started, merchant)
    wechat_sim.inject_error("cgi-bin/message/template/send", 45009, times=1)  # keep it queued a moment
    await buy(started, headers, member, "k-1")
    [delivery] = await settled(started)
    # It reached WeChat, and the process died before writing `sent`.
    sent_before = await _send_directly(wechat_sim, merchant, delivery)
    await NoticeDelivery.filter(id=delivery.id).update(status=DeliveryStatus.SENDING, channel="template")
    await Task.filter(kind=NOTICE_SEND).update(status=TaskStatus.RUNNING, lease_until=datetime.now(UTC))
    await started.app[EFFECTS].run_due(datetime.now(UTC) + timedelta(minutes=5))
    delivery = await NoticeDelivery.get(id=delivery.id)
    assert delivery.status == DeliveryStatus.SENT and delivery.msgid == str(sent_before)
    accepted = [r for r in wechat_sim.records("cgi-bin/message/template/send") if r["errcode"] == 0]
    assert len(accepted) == 1  # the resend was refused by WeChat as a duplicate, nothing new delivered

    await notice_settings.save(merchant, "purchase_receipt", {"channels": ["custom"]}, actor="test")
    wechat_sim.interact(merchant.oa_appid, "o-alice")
    await reach.window_opened(started.app[REDIS], merchant.id, "o-alice", datetime.now(UTC))
    wechat_sim.inject_error("cgi-bin/message/custom/send", 45009, times=1)
    await buy(started, headers, member, "k-2")
    _, custom = await settled(started)
    await NoticeDelivery.filter(id=custom.id).update(status=DeliveryStatus.SENDING, channel="custom")
    await Task.filter(key=f"notice:{custom.id}").update(
        status=TaskStatus.RUNNING, lease_until=datetime.now(UTC)
    )
    await started.app[EFFECTS].run_due(datetime.now(UTC) + timedelta(minutes=5))
    custom = await NoticeDelivery.get(id=custom.id)
    assert (custom.status, custom.reason) == (DeliveryStatus.FAILED, "outcome_unknown")
    assert [r["errcode"] for r in wechat_sim.records("cgi-bin/message/custom/send")] == [45009]


async def _send_directly(wechat_sim: WeChatSim, merchant: Merchant, delivery: NoticeDelivery) -> int:
    """What the dead process had sent: the template message under the record's client_msg_id."""
    import aiohttp

    from handlers.wechat.client import WeChatClient, oa_credentials

    async with aiohttp.ClientSession() as session:
        redis = FakeRedis()
        client = WeChatClient(session, redis, wechat_sim.url)
        return await client.send_template(
            oa_credentials(merchant),
            "o-alice",
            "TPL-RECEIPT",
            {"amount1": "x", "thing2": "y", "number3": "1"},
            client_msg_id=f"notice-{delivery.id}",
        )


async def test_two_runners_at_once_send_a_notice_once(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    wechat_sim.inject_error("cgi-bin/message/template/send", 45009, times=1)
    await buy(started, await staff_headers(started, merchant), member, "t-1")
    await settled(started)
    later = datetime.now(UTC) + timedelta(minutes=5)
    registry = started.app[EFFECTS]
    await asyncio.gather(registry.run_due(later), registry.run_due(later), registry.run_due(later))
    accepted = [r for r in wechat_sim.records("cgi-bin/message/template/send") if r["errcode"] == 0]
    assert len(accepted) == 1
    assert (await NoticeDelivery.get()).status == DeliveryStatus.SENT


async def test_switched_off_and_erased_are_skipped_with_the_reason(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim, enabled=False)
    member = await follower(merchant, wechat_sim)
    headers = await staff_headers(started, merchant)
    await buy(started, headers, member, "o-1")
    assert [r.reason for r in await settled(started)] == ["switched_off"]
    await notice_settings.save(merchant, "purchase_receipt", {"enabled": True}, actor="test")
    await Member.filter(id=member.id).update(anonymized_at=datetime.now(UTC))
    await tell(
        started.app[EFFECTS],
        "purchase_receipt",
        merchant_id=merchant.id,
        member_id=member.id,
        event_key="after-erasure",
        context={},
    )
    assert [r.reason for r in await settled(started)] == ["switched_off", "member_erased"]
    assert wechat_sim.records("cgi-bin/message/template/send") == []


async def test_template_job_finished_events_update_the_record(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    await buy(started, await staff_headers(started, merchant), member, "j-1")
    [delivery] = await settled(started)
    pusher = WeChatPusher(started, merchant.slug, "testtoken", AES_KEY, merchant.oa_appid)
    xml = event_xml(
        "o-alice",
        "TEMPLATESENDJOBFINISH",
        create_time=int(datetime.now(UTC).timestamp()),
        extra=f"<MsgID>{delivery.msgid}</MsgID><Status><![CDATA[failed:user block]]></Status>",
    )
    assert (await pusher.push(xml)).content == ""
    assert (await NoticeDelivery.get(id=delivery.id)).job_status == "failed:user block"


async def test_merchant_settings_records_and_counts_over_http(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    admin = await staff_headers(started, merchant, role="admin", username="boss")
    listed = await (await started.get("/api/admin/notices/settings", headers=admin)).json()
    kinds = {item["kind"]: item for item in listed["items"]}
    assert kinds["purchase_receipt"]["customised"] and not kinds["birthday_greeting"]["customised"]
    assert (listed["quiet_start"], listed["quiet_end"]) == ("22:00", "08:00")
    bad = await started.put(
        "/api/admin/notices/settings/birthday_greeting",
        json={"body": "生日快乐 {{ nickname }}"},
        headers=admin,
    )
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "body"
    unknown = await started.put("/api/admin/notices/settings/nope", json={}, headers=admin)
    assert unknown.status == 404
    await buy(started, admin, member, "h-1")
    await settled(started)
    records = await (await started.get(f"/api/admin/members/{member.id}/notices", headers=admin)).json()
    assert [(r["kind"], r["status"], r["channel"]) for r in records["items"]] == [
        ("purchase_receipt", "sent", "template")
    ]
    stats = await (await started.get("/api/admin/notices/stats?days=7", headers=admin)).json()
    assert stats["counts"] == [
        {"kind": "purchase_receipt", "label": "消费小票", "status": "sent", "count": 1}
    ]
    token = await mp_token(started, merchant, member)
    mine = await (
        await started.get(f"/api/mp/{merchant.slug}/notices", headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert [n["label"] for n in mine["items"]] == ["消费小票"]


async def test_a_coupon_lapsing_within_three_days_is_reminded_once(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    member = await follower(merchant, wechat_sim)
    now = datetime.now(UTC)
    template = await CouponTemplate.create(
        merchant_id=merchant.id, name="满100减20", kind=CouponKind.FIXED, amount_off_fen=2000, valid_days=2
    )
    later = await CouponTemplate.create(
        merchant_id=merchant.id, name="满200减50", kind=CouponKind.FIXED, amount_off_fen=5000, valid_days=30
    )
    soon = await issue(merchant, member.id, template.id, source="manual", key="c-soon", now=now)
    await issue(merchant, member.id, later.id, source="manual", key="c-later", now=now)
    registry = started.app[EFFECTS]
    assert await run_job("coupon_reminders", now, registry) == {"reminded": 1}
    assert await run_job("coupon_reminders", now + timedelta(hours=1), registry) == {"reminded": 0}
    [delivery] = await NoticeDelivery.filter(kind="coupon_expiring")
    assert delivery.member_id == member.id and delivery.event_key == f"coupon:{soon.id}"
    assert delivery.context["code"] == soon.code and delivery.context["coupon"] == "满100减20"
