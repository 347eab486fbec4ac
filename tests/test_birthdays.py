"""Birthdays at 09:00 merchant-local: the tier's gift (points and coupons) and a greeting, once a year,
however often the job runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from handlers import birthdays
from handlers.coupons.issue import TemplateSpec, create_template
from handlers.loyalty import config as loyalty_config
from handlers.loyalty.ledger_audit import audit_points
from handlers.rules.coupons import Terms, Validity
from models.coupon import Coupon
from models.member import Member
from models.notice import NoticeDelivery
from models.points import PointsAccount, PointsKind, PointsTransaction
from tests.support.factories import EFFECTS, make_member, make_merchant

NINE = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai on 20 May 2026
LONG_AGO = NINE - timedelta(days=400)


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    spec = TemplateSpec(
        "生日蛋糕券", Terms("fixed", threshold_fen=0, amount_off_fen=3_000), Validity(days=30)
    )
    template = await create_template(merchant, spec, actor="test")
    ladder = [
        {
            "code": "normal",
            "name": "普通会员",
            "rank": 0,
            "benefits": {"birthday_gift_points": 300, "birthday_gift_coupon_template_ids": [template.id]},
        }
    ]
    await loyalty_config.save_tiers(merchant.id, ladder, actor="test")
    await loyalty_config.save_program(merchant.id, {"registration_bonus": 0}, actor="test")
    return merchant


async def born(merchant: Any, openid: str, birthday: date | None, registered: datetime = LONG_AGO) -> Member:
    member = await make_member(merchant, openid=openid)
    await Member.filter(id=member.id).update(birthday=birthday, registered_at=registered)
    return await Member.get(id=member.id)


async def gifts(member: Member) -> tuple[int, int, int]:
    account = await PointsAccount.get_or_none(member_id=member.id)
    return (
        account.balance if account else 0,
        await Coupon.filter(member_id=member.id, source="birthday").count(),
        await NoticeDelivery.filter(member_id=member.id, kind="birthday_greeting").count(),
    )


async def test_a_birthday_is_celebrated_from_nine_once_however_often_the_job_runs(shop: Any) -> None:
    alice = await born(shop, "o-alice", date(1990, 5, 20))
    assert await birthdays.birthday_gifts(NINE - timedelta(minutes=1), EFFECTS) == {"celebrated": 0}
    assert await gifts(alice) == (0, 0, 0)
    runs = await asyncio.gather(*(birthdays.birthday_gifts(NINE, EFFECTS) for _ in range(3)))
    assert sorted(r["celebrated"] for r in runs) == [0, 0, 1]
    assert await birthdays.birthday_gifts(NINE + timedelta(hours=5), EFFECTS) == {"celebrated": 0}
    assert await gifts(alice) == (300, 1, 1)
    gift = await PointsTransaction.get(member_id=alice.id, kind=PointsKind.EARN_PROMOTION)
    assert gift.idempotency_key == f"birthday:{alice.id}:2026"
    greeting = await NoticeDelivery.get(member_id=alice.id)
    assert (greeting.event_key, greeting.context["gift"]) == ("birthday:2026", "300 积分、生日蛋糕券")
    assert await audit_points() == []


async def test_a_missed_day_is_caught_up_but_not_an_old_one_or_one_before_registering(shop: Any) -> None:
    three_days_ago = await born(shop, "o-late-run", date(1990, 5, 17))
    ten_days_ago = await born(shop, "o-old", date(1990, 5, 10))
    joined_after = await born(shop, "o-new", date(1990, 5, 17), registered=NINE - timedelta(days=1))
    nobody = await born(shop, "o-none", None)
    assert await birthdays.birthday_gifts(NINE, EFFECTS) == {"celebrated": 1}
    assert await gifts(three_days_ago) == (300, 1, 1)
    for member in (ten_days_ago, joined_after, nobody):
        assert await gifts(member) == (0, 0, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [(datetime(2027, 2, 28, 1, tzinfo=UTC), 1), (datetime(2028, 2, 28, 1, tzinfo=UTC), 0)],
)
async def test_29_february_is_celebrated_on_28_february_in_other_years(
    shop: Any, now: datetime, expected: int
) -> None:
    await born(shop, "o-leap", date(1992, 2, 29))
    assert await birthdays.birthday_gifts(now, EFFECTS) == {"celebrated": expected}


def test_calendar_days_cover_the_catch_up_window_and_29_february() -> None:
    assert birthdays.calendar_days(date(2027, 3, 1), 3) == ["02-27", "02-28", "02-29", "03-01"]
    assert birthdays.calendar_days(date(2028, 3, 1), 2) == ["02-29", "03-01"]
