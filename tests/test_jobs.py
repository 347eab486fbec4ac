"""The periodic jobs: each one's effect, idempotency (a second run does nothing) and catch-up."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.logs import JsonFormatter
from handlers import birthdays, jobs
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, tiers
from handlers.loyalty.ledger_audit import audit_points
from handlers.rules.calendar import due_birthday
from handlers.till.purchase import PurchaseRequest, record_purchase
from models.member import Member
from models.points import PointsAccount, PointsKind, PointsTransaction
from tests.support.factories import EFFECTS, make_member, make_merchant

NOW = datetime.now(UTC).replace(microsecond=0)
LADDER: list[dict[str, Any]] = [
    {"code": "normal", "name": "普通会员", "rank": 0, "benefits": {"birthday_gift_points": 50}},
    {
        "code": "silver",
        "name": "银卡",
        "rank": 1,
        "upgrade_cost_points": 100,
        "criteria": {"window_days": 365, "spend_fen": 100_000},
        "benefits": {"birthday_gift_points": 200},
        "downgrade": {"enabled": True, "every_days": 30, "grace_days": 0},
    },
]


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    await loyalty_config.save_program(merchant.id, {"registration_bonus": 0}, actor="test")
    await loyalty_config.save_tiers(merchant.id, LADDER, actor="test")
    member = await make_member(merchant)
    return merchant, member


async def balance(member: Member) -> int:
    account = await PointsAccount.get_or_none(member_id=member.id)
    return account.balance if account else 0


async def test_points_maintenance_releases_then_expires_and_a_second_run_does_nothing(shop: Any) -> None:
    merchant, member = shop
    await loyalty_config.save_program(merchant.id, {"pending_days": 7}, actor="test")
    await record_purchase(merchant, None, PurchaseRequest("p1", member.id, 10_000), now=NOW, effects=EFFECTS)
    await ledger.credit(
        merchant.id, member.id, 30, PointsKind.GRANT, key="g1", now=NOW, expires_at=NOW + timedelta(days=1)
    )
    nothing = {"released_lots": 0, "expired_members": 0}
    later = NOW + timedelta(days=8)
    assert await jobs.points_maintenance(NOW) == nothing
    assert await jobs.points_maintenance(later) == {"released_lots": 1, "expired_members": 1}
    assert await balance(member) == 100
    postings = await PointsTransaction.filter(member_id=member.id).count()
    assert await jobs.points_maintenance(later) == nothing
    assert await PointsTransaction.filter(member_id=member.id).count() == postings
    assert await audit_points() == []


async def test_points_maintenance_catches_up_missed_runs_in_one(shop: Any) -> None:
    merchant, member = shop
    for day in (1, 2):  # due on two different days; the job "missed" both
        await ledger.credit(
            merchant.id,
            member.id,
            10 * day,
            PointsKind.GRANT,
            key=f"g{day}",
            now=NOW,
            expires_at=NOW + timedelta(days=day),
        )
    counts = await jobs.points_maintenance(NOW + timedelta(days=3))
    assert counts == {"released_lots": 0, "expired_members": 1}
    assert await balance(member) == 0
    expired = await PointsTransaction.get(member_id=member.id, kind=PointsKind.EXPIRE)
    assert expired.delta == -30
    assert await audit_points() == []


async def test_tier_review_downgrades_once_when_due_and_catches_up(shop: Any) -> None:
    merchant, member = shop
    await ledger.credit(merchant.id, member.id, 100, PointsKind.GRANT, key="g", now=NOW, expires_at=None)
    await tiers.buy_upgrade(merchant, member.id, "silver", key="up", now=NOW, effects=EFFECTS)
    assert await jobs.tier_reviews(NOW + timedelta(days=10)) == {"downgraded": 0}  # not due yet
    # Two 30-day periods passed without a run: one run applies the review once.
    assert await jobs.tier_reviews(NOW + timedelta(days=65)) == {"downgraded": 1}
    assert await tiers.tier_code(merchant.id, member.id) == "normal"
    assert await jobs.tier_reviews(NOW + timedelta(days=65)) == {"downgraded": 0}


@pytest.mark.parametrize(
    ("birthday", "registered", "today", "due"),
    [
        (date(1990, 5, 20), date(2020, 1, 1), date(2026, 5, 20), date(2026, 5, 20)),
        (date(1990, 5, 20), date(2020, 1, 1), date(2026, 5, 26), date(2026, 5, 20)),  # 6 days late
        (date(1990, 5, 20), date(2020, 1, 1), date(2026, 5, 27), None),  # outside the window
        (date(1990, 5, 20), date(2020, 1, 1), date(2026, 5, 19), None),  # not yet
        (date(1990, 5, 20), date(2026, 5, 21), date(2026, 5, 22), None),  # registered after it
        (date(1990, 12, 30), date(2020, 1, 1), date(2027, 1, 2), date(2026, 12, 30)),  # across new year
        (date(1992, 2, 29), date(2020, 1, 1), date(2027, 2, 28), date(2027, 2, 28)),  # not a leap year
        (date(1992, 2, 29), date(2020, 1, 1), date(2028, 2, 29), date(2028, 2, 29)),
    ],
)
def test_due_birthday(birthday: date, registered: date, today: date, due: date | None) -> None:
    assert due_birthday(birthday, registered, today, birthdays.CATCH_UP_DAYS) == due


async def test_retention_erases_due_profiles_once(shop: Any) -> None:
    merchant, member = shop
    gone = NOW - timedelta(days=merchant.retention_grace_days + 1)
    await Member.filter(id=member.id).update(openid=None, subscribed=False, unsubscribed_at=gone, name="张三")
    kept = await make_member(merchant, openid="o-kept")
    assert await jobs.retention(NOW) == {"erased": 1}
    assert await jobs.retention(NOW) == {"erased": 0}
    erased = await Member.get(id=member.id)
    assert erased.anonymized_at is not None and erased.name is None
    assert (await Member.get(id=kept.id)).anonymized_at is None


async def test_run_job_logs_one_json_line_and_refuses_unknown_or_naive(
    shop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="handlers.jobs"):
        assert await jobs.run_job("retention", NOW, EFFECTS) == {"erased": 0}
    [record] = [r for r in caplog.records if r.name == "handlers.jobs"]
    line = json.loads(JsonFormatter().format(record))
    assert (line["job"], line["counts"], line["job_now"]) == ("retention", {"erased": 0}, NOW.isoformat())
    with pytest.raises(ValueError, match="unknown job"):
        await jobs.run_job("nope", NOW, EFFECTS)
    with pytest.raises(ValueError, match="timezone-aware"):
        await jobs.run_job("points_maintenance", NOW.replace(tzinfo=None), EFFECTS)
