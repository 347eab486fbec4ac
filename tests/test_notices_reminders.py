"""Reminders before something lapses — points expiring, a pick-up due tomorrow, a tier about to be lost —
reach the simulator once however often their job runs, skip erased members and what is not due, and
count days in the merchant's own calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.jobs import run_job
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.mall import catalogue
from handlers.notices import settings as notice_settings
from handlers.notices.catalog import KINDS
from handlers.till.purchase import PurchaseRequest, record_purchase
from models.loyalty import MemberTier
from models.mall import ItemKind, MallOrder
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery
from models.points import PointsKind
from tests.support import factories
from tests.support.factories import make_member, make_merchant
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import BACKGROUND, EFFECTS

TEMPLATES = {
    "points_expiring": "TPL-POINTS",
    "pickup_deadline": "TPL-PICKUP",
    "tier_downgrade_warning": "TPL-TIER",
}
SEND = "cgi-bin/message/template/send"


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def shop(wechat_sim: WeChatSim, timezone: str = "Asia/Shanghai") -> Merchant:
    """A merchant whose reminders go out as template messages at any hour (no quiet hours)."""
    merchant = await make_merchant("shop", timezone=timezone)
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    for kind, template_id in TEMPLATES.items():
        wechat_sim.add_template(merchant.oa_appid, template_id, tuple(KINDS[kind].fields))
        await notice_settings.save(merchant, kind, {"template_id": template_id}, actor="test")
    await loyalty_config.save_program(merchant.id, {"registration_bonus": 0}, actor="test")
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    return await Merchant.get(id=merchant.id)


async def follower(merchant: Merchant, wechat_sim: WeChatSim, openid: str) -> Member:
    wechat_sim.add_follower(merchant.oa_appid, openid)
    return await make_member(merchant, openid=openid)


async def erase(member: Member) -> None:
    await Member.filter(id=member.id).update(anonymized_at=datetime.now(UTC))


async def delivered(client: Any, wechat_sim: WeChatSim, kind: str) -> list[dict[str, Any]]:
    """Run the due sends (as the worker would); the messages of `kind` WeChat accepted, as
    (openid, data values), oldest first. With in-process Redis the app's own background run of them
    comes first."""
    await client.app[BACKGROUND].drain()
    await client.app[EFFECTS].run_due(datetime.now(UTC) + timedelta(minutes=1))
    pending = await NoticeDelivery.filter(
        kind=kind, status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING]
    )
    assert pending == []
    return [
        {"to": r["body"]["touser"], **{k: v["value"] for k, v in r["body"]["data"].items()}}
        for r in wechat_sim.records(SEND)
        if r["errcode"] == 0 and r["body"]["template_id"] == TEMPLATES[kind]
    ]


def local_today(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def at(day: date, hour: int, minute: int, tz: str) -> datetime:
    return datetime.combine(day, time(hour, minute), ZoneInfo(tz))


def end_of(day: date, tz: str) -> datetime:
    """When points that lapse on the local `day` expire (the ledger's end of the local day)."""
    return datetime.combine(day, time.max, ZoneInfo(tz))


# --- points expiring --------------------------------------------------------------------------------------


async def earn(merchant: Merchant, member: Member, points: int, key: str, expires: datetime | None) -> None:
    now = datetime.now(UTC)
    await ledger.credit(
        merchant.id,
        member.id,
        points,
        PointsKind.GRANT,
        key=key,
        now=now - timedelta(days=60),
        expires_at=expires,
    )


async def test_points_lapsing_within_30_days_are_reminded_once_per_date(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    tz, today = merchant.timezone, local_today(merchant.timezone)
    alice = await follower(merchant, wechat_sim, "o-alice")
    first, second = today + timedelta(days=10), today + timedelta(days=30)
    await earn(merchant, alice, 100, "a-1", end_of(first, tz))
    await earn(merchant, alice, 50, "a-2", end_of(first, tz))  # the same date: one batch with a-1
    await earn(merchant, alice, 70, "a-3", end_of(second, tz))
    await earn(merchant, alice, 40, "a-4", end_of(today + timedelta(days=31), tz))  # not due yet
    await earn(merchant, alice, 25, "a-5", None)  # never lapses
    await earn(merchant, alice, 15, "a-6", end_of(today - timedelta(days=1), tz))  # lapsed: the expiry's
    await ledger.debit(  # spends the soonest lots first: 30 of a-1 (then the lapsed lot expires)
        merchant.id, alice.id, 30, PointsKind.SPEND_REDEMPTION, key="a-spend", now=datetime.now(UTC)
    )
    await ledger.hold_pending(  # pending purchase points are not the member's yet
        merchant.id,
        alice.id,
        60,
        key="a-pending",
        now=datetime.now(UTC),
        available_at=datetime.now(UTC) + timedelta(days=7),
        expires_at=end_of(first, tz),
    )
    now = datetime.now(UTC)
    registry = started.app[EFFECTS]
    assert await run_job("points_reminders", now, registry) == {"reminded": 2}
    assert await run_job("points_reminders", now + timedelta(hours=1), registry) == {"reminded": 0}
    sent = await delivered(started, wechat_sim, "points_expiring")
    assert sent == [
        {"to": "o-alice", "number1": "120", "time2": first.isoformat(), "thing3": "积分商城兑换好礼"},
        {"to": "o-alice", "number1": "70", "time2": second.isoformat(), "thing3": "积分商城兑换好礼"},
    ]
    keys = [d.event_key for d in await NoticeDelivery.filter(kind="points_expiring").order_by("id")]
    assert keys == [f"points_expiring:{first.isoformat()}", f"points_expiring:{second.isoformat()}"]
    assert await run_job("points_reminders", now + timedelta(days=1), registry) == {
        "reminded": 1
    }  # a-4's day
    assert await run_job("points_reminders", now + timedelta(days=1), registry) == {"reminded": 0}
    assert len(await delivered(started, wechat_sim, "points_expiring")) == 3


async def test_points_of_erased_indebted_and_empty_members_are_not_reminded(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    soon = end_of(local_today(merchant.timezone) + timedelta(days=5), merchant.timezone)
    gone = await follower(merchant, wechat_sim, "o-gone")
    await earn(merchant, gone, 100, "g-1", soon)
    await erase(gone)
    debtor = await follower(merchant, wechat_sim, "o-debt")
    await earn(merchant, debtor, 100, "d-1", soon)
    now = datetime.now(UTC)
    await ledger.debit(merchant.id, debtor.id, 80, PointsKind.SPEND_REDEMPTION, key="d-spend", now=now)
    await ledger.reverse(merchant.id, "d-1", key="d-refund", now=now)  # clawed back into debt: -80
    await earn(merchant, debtor, 30, "d-2", soon)  # repays the debt, fills no lot
    await follower(merchant, wechat_sim, "o-empty")
    assert await run_job("points_reminders", now, started.app[EFFECTS]) == {"reminded": 0}
    assert await delivered(started, wechat_sim, "points_expiring") == []


async def test_points_reminders_count_days_in_the_merchant_calendar(
    started: Any, wechat_sim: WeChatSim
) -> None:
    """Los Angeles is behind UTC: at 23:30 there it is already tomorrow in UTC, yet day 31 is not due until
    the local date turns; the reminder names the local date, not the UTC one."""
    tz = "America/Los_Angeles"
    merchant = await shop(wechat_sim, timezone=tz)
    bob = await follower(merchant, wechat_sim, "o-bob")
    today = local_today(tz)
    day_30, day_31 = today + timedelta(days=30), today + timedelta(days=31)
    await earn(merchant, bob, 10, "b-30", end_of(day_30, tz))
    await earn(merchant, bob, 20, "b-31", end_of(day_31, tz))
    registry = started.app[EFFECTS]
    late = at(today, 23, 30, tz)
    assert await run_job("points_reminders", late, registry) == {"reminded": 1}
    assert await run_job("points_reminders", late + timedelta(minutes=29), registry) == {"reminded": 0}
    assert await run_job("points_reminders", late + timedelta(minutes=31), registry) == {"reminded": 1}
    sent = await delivered(started, wechat_sim, "points_expiring")
    # One batch sends them side by side: compare as a set of messages, not an order.
    assert sorted((m["number1"], m["time2"]) for m in sent) == [
        ("10", day_30.isoformat()),
        ("20", day_31.isoformat()),
    ]
    assert end_of(day_30, tz).astimezone(UTC).date() != day_30  # the UTC date would have been wrong


# --- pick-up deadline -------------------------------------------------------------------------------------


async def pickup(merchant: Merchant, member: Member, item_id: int, key: str, deadline: datetime) -> MallOrder:
    await ledger.credit(
        merchant.id,
        member.id,
        100,
        PointsKind.GRANT,
        key=f"pts-{key}",
        now=datetime.now(UTC),
        expires_at=None,
    )
    order, _ = await catalogue.redeem(
        merchant, member, item_id, qty=1, client_key=key, now=datetime.now(UTC), effects=factories.EFFECTS
    )
    await MallOrder.filter(id=order.id).update(pickup_deadline=deadline)
    return await MallOrder.get(id=order.id)


async def test_a_pickup_due_tomorrow_is_reminded_once_by_the_local_calendar(
    started: Any, wechat_sim: WeChatSim
) -> None:
    """At 23:30 in Shanghai (15:30 UTC), tomorrow begins in 30 minutes: a deadline at 00:10 is tomorrow's
    (though the same UTC date as now), one at 00:10 the day after is not (though UTC calls it tomorrow)."""
    merchant = await shop(wechat_sim)
    tz, today = merchant.timezone, local_today(merchant.timezone)
    item = await catalogue.create_item(
        merchant, ItemKind.PICKUP, catalogue.ItemInput(name="拿铁一杯", price_points=100), stock=20, actor="t"
    )
    carol = await follower(merchant, wechat_sim, "o-carol")
    tomorrow = today + timedelta(days=1)
    early = await pickup(merchant, carol, item.id, "early", at(tomorrow, 0, 10, tz))
    late = await pickup(merchant, carol, item.id, "late", at(tomorrow, 23, 59, tz))
    after = await pickup(merchant, carol, item.id, "after", at(today + timedelta(days=2), 0, 10, tz))
    await pickup(merchant, carol, item.id, "today", at(today, 23, 50, tz))  # today's deadline: too late
    cancelled = await pickup(merchant, carol, item.id, "cancelled", at(tomorrow, 12, 0, tz))
    await catalogue.cancel(merchant, carol, cancelled.id, now=datetime.now(UTC))
    dave = await follower(merchant, wechat_sim, "o-dave")
    await pickup(merchant, dave, item.id, "erased", at(tomorrow, 12, 0, tz))
    await erase(dave)
    registry = started.app[EFFECTS]
    night = at(today, 23, 30, tz)
    assert await run_job("pickup_reminders", night, registry) == {"reminded": 2}
    assert await run_job("pickup_reminders", night + timedelta(minutes=20), registry) == {"reminded": 0}
    sent = await delivered(started, wechat_sim, "pickup_deadline")
    assert sent == [
        {
            "to": "o-carol",
            "thing1": "拿铁一杯",
            "character_string2": early.pickup_code,
            "time3": f"{tomorrow} 00:10",
        },
        {
            "to": "o-carol",
            "thing1": "拿铁一杯",
            "character_string2": late.pickup_code,
            "time3": f"{tomorrow} 23:59",
        },
    ]
    # Past midnight the day after's deadline is tomorrow's; the ones already reminded are not again.
    assert await run_job("pickup_reminders", night + timedelta(hours=1), registry) == {"reminded": 1}
    [reminded] = await NoticeDelivery.filter(kind="pickup_deadline", event_key=f"order:{after.id}")
    assert reminded.context["deadline"] == f"{today + timedelta(days=2)} 00:10"
    assert len(await delivered(started, wechat_sim, "pickup_deadline")) == 3


# --- tier downgrade warning -------------------------------------------------------------------------------

LADDER = [
    {"code": "normal", "name": "普通会员", "rank": 0},
    {
        "code": "silver",
        "name": "银卡",
        "rank": 1,
        "criteria": {"window_days": 365, "spend_fen": 100_000},
        "downgrade": {"enabled": True, "every_days": 30, "grace_days": 0, "warn_days": 7},
    },
]


async def silver_since(member: Member, day: date, tz: str) -> None:
    """The member reached silver on the local `day` (reviews every 30 days from then)."""
    since = at(day, 10, 0, tz)
    if not await MemberTier.filter(member_id=member.id).update(tier_code="silver", since=since):
        await MemberTier.create(
            merchant_id=member.merchant_id, member_id=member.id, tier_code="silver", since=since
        )


async def test_a_member_who_would_lose_the_tier_is_warned_a_week_ahead_once(
    started: Any, wechat_sim: WeChatSim
) -> None:
    """Warnings count days in Shanghai: at 00:30 there (16:30 UTC the day before) a review on day +7 is a
    week away; an hour earlier it was eight days."""
    merchant = await shop(wechat_sim)
    await loyalty_config.save_tiers(merchant.id, LADDER, actor="test")
    tz, today = merchant.timezone, local_today(merchant.timezone)
    review = today + timedelta(days=7)
    losing = await follower(merchant, wechat_sim, "o-losing")
    await silver_since(losing, review - timedelta(days=30), tz)
    keeping = await follower(merchant, wechat_sim, "o-keeping")  # spent 1,000 yuan: keeps silver
    await record_purchase(
        merchant,
        None,
        PurchaseRequest("keep", keeping.id, 100_000),
        now=datetime.now(UTC),
        effects=started.app[EFFECTS],
    )
    await silver_since(keeping, review - timedelta(days=30), tz)
    later = await follower(merchant, wechat_sim, "o-later")  # reviewed a day later
    await silver_since(later, review - timedelta(days=29), tz)
    gone = await follower(merchant, wechat_sim, "o-gone")
    await silver_since(gone, review - timedelta(days=30), tz)
    await erase(gone)
    registry = started.app[EFFECTS]
    midnight = at(today, 0, 30, tz)
    assert await run_job("tier_warnings", midnight - timedelta(hours=1), registry) == {"warned": 0}
    assert await run_job("tier_warnings", midnight, registry) == {"warned": 1}
    assert await run_job("tier_warnings", midnight + timedelta(hours=5), registry) == {"warned": 0}
    sent = await delivered(started, wechat_sim, "tier_downgrade_warning")
    assert sent == [
        {"to": "o-losing", "thing1": "银卡", "time2": review.isoformat(), "thing3": "再消费 1000 元即可保级"}
    ]
    [warning] = await NoticeDelivery.filter(kind="tier_downgrade_warning")
    assert warning.event_key == f"tier_review:silver:{review.isoformat()}"
    # The next day the later member's review is a week away; the one warned already is not warned again.
    assert await run_job("tier_warnings", midnight + timedelta(days=1), registry) == {"warned": 1}
    assert [m["to"] for m in await delivered(started, wechat_sim, "tier_downgrade_warning")] == [
        "o-losing",
        "o-later",
    ]


async def test_no_warning_when_warn_days_is_zero_or_the_review_is_done(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    tz, today = merchant.timezone, local_today(merchant.timezone)
    member = await follower(merchant, wechat_sim, "o-eve")
    await silver_since(member, today - timedelta(days=30), tz)  # today's review
    await MemberTier.filter(member_id=member.id).update(last_review_on=today)  # already held (kept)
    await loyalty_config.save_tiers(merchant.id, LADDER, actor="test")
    registry = started.app[EFFECTS]
    noon = at(today, 12, 0, tz)
    assert await run_job("tier_warnings", noon, registry) == {"warned": 0}  # next review is 30 days away
    silent = [
        dict(LADDER[0]),
        {**LADDER[1], "downgrade": {"enabled": True, "every_days": 30, "warn_days": 0}},
    ]
    await loyalty_config.save_tiers(merchant.id, silent, actor="test")
    assert await run_job("tier_warnings", noon + timedelta(days=25), registry) == {"warned": 0}
