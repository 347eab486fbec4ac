"""Multi-level referral awards: levels, at-most-once (also concurrently), chain guards, the ranking."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.errors import NotFound
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import referrals
from handlers.loyalty.ledger_audit import audit_points
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsTransaction
from models.referral import ReferralAward
from tests.support.factories import EFFECTS, make_member, make_merchant
from tests.test_admin_loyalty import login

LEVELS = [100, 30, 10]


async def shop_with_levels(levels: list[int] = LEVELS, trigger: str = "first_purchase") -> Merchant:
    shop = await make_merchant()
    await loyalty_config.save_program(
        shop.id, {"referral": {"trigger": trigger, "level_points": levels}}, actor="test"
    )
    return shop


async def chain(shop: Merchant, length: int, prefix: str = "m") -> list[Member]:
    """Members [top, …, bottom]: each one referred by the one before it."""
    people: list[Member] = []
    for index in range(length):
        referrer = people[-1] if people else None
        people.append(await make_member(shop, openid=f"o-{prefix}-{index}", referrer=referrer))
    return people


async def balances(people: list[Member]) -> list[int]:
    rows = await PointsAccount.filter(member_id__in=[p.id for p in people])
    accounts = {a.member_id: a.balance for a in rows}
    return [accounts.get(p.id, 0) for p in people]


async def test_three_levels_are_awarded_once(client: TestClient) -> None:
    shop = await shop_with_levels()
    top, second, first, referee = await chain(shop, 4)
    now = datetime.now(UTC)
    awards = await referrals.award(shop, referee.id, trigger="first_purchase", now=now, effects=EFFECTS)
    assert [(a.referrer_id, a.level, a.points) for a in awards] == [
        (first.id, 1, 100),
        (second.id, 2, 30),
        (top.id, 3, 10),
    ]
    assert await balances([top, second, first, referee]) == [10, 30, 100, 0]
    assert await referrals.award(shop, referee.id, trigger="first_purchase", now=now, effects=EFFECTS) == []
    txns = await PointsTransaction.filter(kind=PointsKind.EARN_REFERRAL).order_by("id")
    assert [t.idempotency_key for t in txns] == [f"referral:{referee.id}:{level}" for level in (1, 2, 3)]
    assert all(t.balance_after > 0 for t in txns)
    assert await audit_points() == []


async def test_depth_stops_at_the_configured_levels_and_other_triggers_award_nothing(
    client: TestClient,
) -> None:
    shop = await shop_with_levels([100, 30])
    people = await chain(shop, 5)
    now = datetime.now(UTC)
    assert await referrals.award(shop, people[-1].id, trigger="registration", now=now, effects=EFFECTS) == []
    awards = await referrals.award(shop, people[-1].id, trigger="first_purchase", now=now, effects=EFFECTS)
    assert [a.level for a in awards] == [1, 2]
    assert await balances(people) == [0, 0, 30, 100, 0]
    assert await audit_points() == []


async def test_concurrent_calls_award_once(client: TestClient) -> None:
    shop = await shop_with_levels()
    people = await chain(shop, 4)
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(
            referrals.award(shop, people[-1].id, trigger="first_purchase", now=now, effects=EFFECTS)
            for _ in range(6)
        )
    )
    assert sorted(award.level for result in results for award in result) == [1, 2, 3]
    assert await ReferralAward.filter(referee_id=people[-1].id).count() == 3
    assert await balances(people) == [10, 30, 100, 0]
    assert await audit_points() == []


async def test_anonymised_referrer_is_skipped_but_its_level_counts(client: TestClient) -> None:
    shop = await shop_with_levels()
    top, second, first, referee = await chain(shop, 4)
    await Member.filter(id=second.id).update(anonymized_at=datetime.now(UTC))
    awards = await referrals.award(
        shop, referee.id, trigger="first_purchase", now=datetime.now(UTC), effects=EFFECTS
    )
    assert [(a.referrer_id, a.level) for a in awards] == [(first.id, 1), (top.id, 3)]
    assert await balances([top, second, first]) == [10, 0, 100]


async def test_zero_point_level_is_recorded_without_a_posting(client: TestClient) -> None:
    shop = await shop_with_levels([0, 5])
    second, first, referee = await chain(shop, 3)
    awards = await referrals.award(
        shop, referee.id, trigger="first_purchase", now=datetime.now(UTC), effects=EFFECTS
    )
    assert [(a.level, a.points, a.transaction_id is None) for a in awards] == [(1, 0, True), (2, 5, False)]
    assert await balances([second, first]) == [5, 0]
    assert await audit_points() == []


async def test_self_cycles_and_other_merchants_award_nothing(client: TestClient) -> None:
    shop = await shop_with_levels()
    loner = await make_member(shop, openid="o-loner")
    await Member.filter(id=loner.id).update(referrer_id=loner.id)
    now = datetime.now(UTC)
    assert await referrals.award(shop, loner.id, trigger="first_purchase", now=now, effects=EFFECTS) == []

    a, b = await make_member(shop, openid="o-a"), await make_member(shop, openid="o-b")
    await Member.filter(id=a.id).update(referrer_id=b.id)
    await Member.filter(id=b.id).update(referrer_id=a.id)
    awards = await referrals.award(shop, a.id, trigger="first_purchase", now=now, effects=EFFECTS)
    assert [(x.referrer_id, x.level) for x in awards] == [(b.id, 1)]

    other = await make_merchant("other")
    outsider = await make_member(other, openid="o-outsider")
    stray = await make_member(shop, openid="o-stray")
    await Member.filter(id=stray.id).update(referrer_id=outsider.id)
    assert await referrals.award(shop, stray.id, trigger="first_purchase", now=now, effects=EFFECTS) == []
    with pytest.raises(NotFound):
        await referrals.award(other, stray.id, trigger="first_purchase", now=now, effects=EFFECTS)
    assert await balances([loner, a, outsider]) == [0, 0, 0]
    assert await audit_points() == []


async def test_ranking_orders_by_direct_referrals_then_points(client: TestClient) -> None:
    shop = await shop_with_levels([100, 30])
    now = datetime.now(UTC)
    star = await make_member(shop, openid="o-star", name="星星")
    runner = await make_member(shop, openid="o-runner")
    quiet = await make_member(shop, openid="o-quiet")
    gone = await make_member(shop, openid="o-gone")
    referees = [
        await make_member(shop, openid="o-r1", referrer=star),
        await make_member(shop, openid="o-r2", referrer=star),
        await make_member(shop, openid="o-r3", referrer=runner),
        await make_member(shop, openid="o-r4", referrer=quiet),
        await make_member(shop, openid="o-r5", referrer=gone),
        await make_member(shop, openid="o-r6", referrer=gone),
        await make_member(shop, openid="o-r7", referrer=gone),
    ]
    referees.append(await make_member(shop, openid="o-r8", referrer=referees[2]))  # runner gets a level 2
    for referee in referees:
        await referrals.award(shop, referee.id, trigger="first_purchase", now=now, effects=EFFECTS)
    await ReferralAward.filter(referrer_id=quiet.id).update(created_at=now - timedelta(days=40))
    await Member.filter(id=gone.id).update(anonymized_at=now)

    since, until = now - timedelta(days=30), now + timedelta(seconds=5)
    ranked = await referrals.ranking(shop.id, since=since, until=until)
    assert [(e.member_code, e.referrals, e.points) for e in ranked] == [
        (star.code, 2, 200),
        (runner.code, 1, 130),
        (referees[2].code, 1, 100),
    ]

    manager = await login(client, shop, "manager")
    response = await client.get("/api/admin/referrals/ranking?days=30&limit=2", headers=manager)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert [(e["rank"], e["member_code"], e["name"]) for e in body["entries"]] == [
        (1, star.code, "星星"),
        (2, runner.code, None),
    ]
    longer = await (await client.get("/api/admin/referrals/ranking?days=60", headers=manager)).json()
    assert quiet.code in [e["member_code"] for e in longer["entries"]]
    for query in ("days=0", "days=367", "limit=101", "days=x"):
        assert (await client.get(f"/api/admin/referrals/ranking?{query}", headers=manager)).status == 400
