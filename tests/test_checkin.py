from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.loyalty import checkin, ledger
from handlers.loyalty.config import save_program
from handlers.loyalty.ledger_audit import audit_points
from models.checkin import Checkin
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsLot, PointsTransaction
from tests.support import dbutil
from tests.support.factories import EFFECTS, make_member, make_merchant

# 2030-03-10 00:00 in Asia/Shanghai (UTC+8, no DST) is 2030-03-09 16:00 UTC.
MIDNIGHT = datetime(2030, 3, 9, 16, 0, tzinfo=UTC)
NOON = MIDNIGHT + timedelta(hours=12)
DAY = date(2030, 3, 10)


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await make_merchant()


async def joined_member(shop: Merchant, *, days_ago: int = 60) -> Member:
    member = await make_member(shop)
    await Member.filter(id=member.id).update(registered_at=NOON - timedelta(days=days_ago))
    return member


async def balance(member: Member) -> int:
    account = await PointsAccount.get_or_none(member_id=member.id)
    return account.balance if account else 0


async def grant(shop: Merchant, member: Member, amount: int) -> None:
    await ledger.credit(
        shop.id,
        member.id,
        amount,
        PointsKind.GRANT,
        key=f"grant:{member.id}:{amount}",
        now=NOON - timedelta(days=30),
        expires_at=None,
    )


async def test_once_per_merchant_local_day_across_midnight(shop: Merchant) -> None:
    member = await joined_member(shop)
    before = await checkin.check_in(
        shop, member.id, now=MIDNIGHT - timedelta(minutes=1), effects=EFFECTS
    )  # 23:59 local
    assert (before.day, before.already, before.points) == (DAY - timedelta(days=1), False, 5)
    again = await checkin.check_in(shop, member.id, now=MIDNIGHT - timedelta(seconds=1), effects=EFFECTS)
    assert again.already and again.points == 0 and again.streak == 1
    after = await checkin.check_in(
        shop, member.id, now=MIDNIGHT + timedelta(minutes=1), effects=EFFECTS
    )  # 00:01 local
    assert (after.day, after.already, after.streak, after.points) == (DAY, False, 2, 5)
    assert await balance(member) == 10
    assert await PointsTransaction.filter(member_id=member.id).count() == 2
    txn = await PointsTransaction.get(idempotency_key=f"checkin:{member.id}:{DAY.isoformat()}")
    assert txn.kind == PointsKind.EARN_CHECKIN and txn.delta == 5
    assert await audit_points() == []


async def test_local_day_follows_the_merchants_timezone(client: Any) -> None:
    shop = await make_merchant("ny", timezone="America/New_York")
    member = await make_member(shop)
    result = await checkin.check_in(
        shop, member.id, now=MIDNIGHT, effects=EFFECTS
    )  # 2030-03-09 11:00 in New York
    assert result.day == date(2030, 3, 9)


async def test_twenty_concurrent_check_ins_post_once(shop: Merchant) -> None:
    member = await joined_member(shop)
    results = await asyncio.gather(
        *(checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS) for _ in range(20))
    )
    assert sorted(r.already for r in results) == [False] + [True] * 19
    assert {r.streak for r in results} == {1}
    assert await Checkin.filter(member_id=member.id).count() == 1
    assert await PointsTransaction.filter(member_id=member.id).count() == 1
    assert await balance(member) == 5
    assert await audit_points() == []


async def test_a_member_of_another_merchant_is_not_found_and_nothing_is_written(shop: Merchant) -> None:
    member = await joined_member(shop)
    other = await make_merchant("other")
    with pytest.raises(NotFound):
        await checkin.check_in(other, member.id, now=NOON, effects=EFFECTS)
    assert await PointsAccount.filter(member_id=member.id).count() == 0
    assert await Checkin.filter(member_id=member.id).count() == 0


async def test_a_check_in_first_repays_a_claw_back_debt(shop: Merchant) -> None:
    member = await joined_member(shop)
    await ledger.credit(shop.id, member.id, 8, PointsKind.GRANT, key="g", now=NOON, expires_at=None)
    await ledger.debit(shop.id, member.id, 5, PointsKind.SPEND_REDEMPTION, key="spend", now=NOON)
    await ledger.reverse(shop.id, "g", key="undo", now=NOON)  # 8 clawed back from 3: a debt of 5
    assert await balance(member) == -5
    repaid = await checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS)  # +5: exactly repays the debt
    assert (repaid.points, repaid.balance) == (5, 0)
    assert (await PointsLot.get(source_key=f"checkin:{member.id}:{DAY}")).remaining == 0
    filled = await checkin.check_in(shop, member.id, now=NOON + timedelta(days=1), effects=EFFECTS)
    assert filled.balance == 5
    assert (await PointsLot.get(source_key=f"checkin:{member.id}:{DAY + timedelta(days=1)}")).remaining == 5
    assert await audit_points() == []


async def test_a_day_worth_no_points_is_recorded_without_a_posting(shop: Merchant) -> None:
    await save_program(shop.id, {"checkin": {"daily_points": 0, "streak_rewards": {"2": 3}}}, actor="test")
    member = await joined_member(shop)
    await grant(shop, member, 7)
    first = await checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS)
    assert (first.already, first.points, first.balance, first.streak) == (False, 0, 7, 1)
    second = await checkin.check_in(shop, member.id, now=NOON + timedelta(days=1), effects=EFFECTS)
    assert (second.points, second.balance, second.streak) == (3, 10, 2)
    assert await PointsTransaction.filter(member_id=member.id, kind=PointsKind.EARN_CHECKIN).count() == 1
    assert await audit_points() == []


async def test_a_make_up_committed_while_the_check_in_waits_continues_the_streak(
    shop: Merchant, database_url: str
) -> None:
    """A check-in waiting for the account lock while a make-up of yesterday commits must count that day
    (streak 4 + 1, not a fresh streak of 1): it reads the streaks only once it holds the lock."""
    member = await joined_member(shop)
    await ledger.credit(shop.id, member.id, 1, PointsKind.GRANT, key="g", now=NOON, expires_at=None)
    other = await asyncpg.connect(dbutil.dsn(database_url))
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM points_account WHERE member_id = $1 FOR UPDATE", member.id)
            await other.execute(
                "INSERT INTO checkin (merchant_id, member_id, day, makeup, streak, points, created_at)"
                " VALUES ($1, $2, $3, TRUE, 4, 0, now())",
                shop.id,
                member.id,
                DAY - timedelta(days=1),
            )
            waiting = asyncio.ensure_future(checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # blocked on the account lock, its snapshot already taken
        result = await waiting
    finally:
        await other.close()
    assert (result.already, result.streak) == (False, 5)
    assert (await Checkin.get(member_id=member.id, day=DAY)).streak == 5
    assert await audit_points() == []


async def test_streak_pays_the_day_seven_reward_and_the_cycle_restarts(shop: Merchant) -> None:
    member = await joined_member(shop)
    earned = [
        (await checkin.check_in(shop, member.id, now=NOON + timedelta(days=n), effects=EFFECTS)).points
        for n in range(9)
    ]
    assert earned == [5, 5, 5, 5, 5, 5, 55, 5, 5]
    first = await Checkin.get(member_id=member.id, day=DAY)
    assert first.streak == 1 and first.points == 5
    assert await balance(member) == sum(earned)
    assert await audit_points() == []


async def test_next_reward_and_a_broken_streak(shop: Merchant) -> None:
    member = await joined_member(shop)
    first = await checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS)
    assert first.next_reward == checkin.NextReward(days=6, streak=7, points=50)
    second = await checkin.check_in(shop, member.id, now=NOON + timedelta(days=1), effects=EFFECTS)
    assert second.streak == 2 and second.next_reward is not None and second.next_reward.days == 5
    restart = await checkin.check_in(
        shop, member.id, now=NOON + timedelta(days=3), effects=EFFECTS
    )  # missed a day
    assert restart.streak == 1


async def test_make_up_fills_the_gap_and_renumbers_the_later_run(shop: Merchant) -> None:
    member = await joined_member(shop)
    await grant(shop, member, 100)
    await checkin.check_in(shop, member.id, now=NOON - timedelta(days=3), effects=EFFECTS)
    await checkin.check_in(shop, member.id, now=NOON - timedelta(days=1), effects=EFFECTS)
    await checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS)
    result = await checkin.make_up(shop, member.id, DAY - timedelta(days=2), now=NOON)
    assert (result.streak, result.current_streak, result.cost) == (2, 4, 20)
    assert result.balance == 100 + 15 - 20 == await balance(member)
    rows = await Checkin.filter(member_id=member.id).order_by("day")
    assert [(r.streak, r.makeup, r.points) for r in rows] == [
        (1, False, 5),
        (2, True, 0),
        (3, False, 5),
        (4, False, 5),
    ]
    tomorrow = await checkin.check_in(shop, member.id, now=NOON + timedelta(days=1), effects=EFFECTS)
    assert tomorrow.streak == 5
    debit = await PointsTransaction.get(idempotency_key=f"makeup:{member.id}:{(DAY - timedelta(days=2))}")
    assert debit.kind == PointsKind.SPEND_MAKEUP and debit.delta == -20
    assert await audit_points() == []


async def test_make_up_can_complete_the_seven_day_reward(shop: Merchant) -> None:
    member = await joined_member(shop)
    await grant(shop, member, 100)
    for n in (6, 5, 4, 2, 1):
        await checkin.check_in(shop, member.id, now=NOON - timedelta(days=n), effects=EFFECTS)
    await checkin.make_up(shop, member.id, DAY - timedelta(days=3), now=NOON)
    today = await checkin.check_in(shop, member.id, now=NOON, effects=EFFECTS)
    assert (today.streak, today.points, today.bonus) == (7, 55, 50)
    assert await audit_points() == []


@pytest.mark.parametrize(
    ("days_back", "error", "reason"),
    [
        (0, ValidationError, "今天之前"),
        (-1, ValidationError, "今天之前"),
        (4, ValidationError, "最近 3 天"),
        (1, Conflict, "已经签到"),
    ],
)
async def test_make_up_refusals_change_nothing(
    shop: Merchant, days_back: int, error: type[Exception], reason: str
) -> None:
    member = await joined_member(shop)
    await grant(shop, member, 100)
    await checkin.check_in(shop, member.id, now=NOON - timedelta(days=1), effects=EFFECTS)
    with pytest.raises(error, match=reason):
        await checkin.make_up(shop, member.id, DAY - timedelta(days=days_back), now=NOON)
    assert await Checkin.filter(member_id=member.id).count() == 1
    assert await balance(member) == 105
    assert await audit_points() == []


async def test_make_up_without_enough_points_is_refused_politely(shop: Merchant) -> None:
    member = await joined_member(shop)
    await checkin.check_in(shop, member.id, now=NOON - timedelta(days=2), effects=EFFECTS)
    with pytest.raises(ledger.NotEnoughPoints, match="补签需要 20 积分，您当前可用 5 积分"):
        await checkin.make_up(shop, member.id, DAY - timedelta(days=1), now=NOON)
    assert await Checkin.filter(member_id=member.id).count() == 1
    assert await PointsTransaction.filter(member_id=member.id).count() == 1
    assert await balance(member) == 5
    assert await audit_points() == []


async def test_make_up_before_joining_and_over_the_monthly_limit(shop: Merchant) -> None:
    newcomer = await joined_member(shop, days_ago=1)
    await grant(shop, newcomer, 100)
    with pytest.raises(ValidationError, match="入会之前"):
        await checkin.make_up(shop, newcomer.id, DAY - timedelta(days=2), now=NOON)
    await save_program(
        shop.id,
        {
            "checkin": {
                "daily_points": 5,
                "makeup_cost_points": 1,
                "makeup_max_days_back": 5,
                "makeup_max_per_month": 2,
            }
        },
        actor="test",
    )
    member = await make_member(shop, openid="o-member-2")
    await Member.filter(id=member.id).update(registered_at=NOON - timedelta(days=60))
    await grant(shop, member, 50)
    for n in (1, 2):
        await checkin.make_up(shop, member.id, DAY - timedelta(days=n), now=NOON)
    with pytest.raises(Conflict, match="每月 2 次"):
        await checkin.make_up(shop, member.id, DAY - timedelta(days=3), now=NOON)
    assert await balance(member) == 48
    assert await audit_points() == []


async def test_calendar_marks_checked_makeup_today_future_and_what_can_be_made_up(shop: Merchant) -> None:
    member = await joined_member(shop)
    await grant(shop, member, 100)
    await checkin.check_in(shop, member.id, now=NOON - timedelta(days=3), effects=EFFECTS)
    await checkin.make_up(shop, member.id, DAY - timedelta(days=2), now=NOON)
    view = await checkin.calendar(shop, member.id, 2030, 3, now=NOON)
    assert (view.year, view.month, len(view.days)) == (2030, 3, 31)
    by_day = {d.day.day: d for d in view.days}
    assert by_day[7].checked and not by_day[7].makeup
    assert by_day[8].checked and by_day[8].makeup
    assert by_day[9].can_make_up and not by_day[9].checked
    assert by_day[6].can_make_up is False  # four days back: outside the 3-day window
    assert by_day[10].today and not by_day[10].future and not by_day[10].can_make_up
    assert by_day[11].future
    assert (view.streak, view.checked_today, view.makeup_cost, view.makeups_left) == (0, False, 20, 2)
    await checkin.make_up(shop, member.id, DAY - timedelta(days=1), now=NOON)
    view = await checkin.calendar(shop, member.id, 2030, 3, now=NOON)
    assert view.streak == 3 and view.next_reward == checkin.NextReward(days=4, streak=7, points=50)
    with pytest.raises(ValidationError):
        await checkin.calendar(shop, member.id, 2030, 13, now=NOON)
