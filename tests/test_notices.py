"""Member notices end to end: a till purchase's receipt reaches the simulator once, on the channel the
merchant chose and WeChat's rules allow, with a delivery record of what happened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.notices import reach
from handlers.notices import settings as notice_settings
from handlers.notices.delivery import NOTICE_SEND
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery
from models.task import Task, TaskStatus
from tests.support.factories import make_member, make_merchant, staff_headers
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import EFFECTS, REDIS

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
    (arq), so the test runs what is due itself, as the worker would (at most 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
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
