from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.core.errors import ValidationError
from handlers.loyalty import ledger, points_view
from handlers.loyalty.ledger_audit import audit_points
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind
from tests.support.factories import make_member, make_merchant

NOW = datetime(2030, 3, 10, 4, 0, tzinfo=UTC)


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await make_merchant()


async def credit(shop: Merchant, member: Member, amount: int, key: str, expires_in_days: int | None) -> None:
    expires = NOW + timedelta(days=expires_in_days) if expires_in_days is not None else None
    await ledger.credit(
        shop.id,
        member.id,
        amount,
        PointsKind.GRANT,
        key=key,
        now=NOW - timedelta(days=1),
        expires_at=expires,
        reason=f"赠送 {key}",
    )


async def test_summary_of_a_member_without_points(shop: Merchant) -> None:
    member = await make_member(shop)
    empty = points_view.PointsSummary(0, 0, 0, 0, None)
    assert await points_view.summary(shop.id, member.id, now=NOW) == empty


async def test_summary_balance_pending_lifetime_and_expiring_soon(shop: Merchant) -> None:
    member = await make_member(shop)
    await credit(shop, member, 100, "a", expires_in_days=40)
    await credit(shop, member, 30, "b", expires_in_days=20)
    await credit(shop, member, 20, "c", expires_in_days=5)
    await credit(shop, member, 50, "d", expires_in_days=None)
    await ledger.hold_pending(
        shop.id, member.id, 70, key="p", now=NOW, available_at=NOW + timedelta(days=7), expires_at=None
    )
    await ledger.debit(shop.id, member.id, 10, PointsKind.SPEND_REDEMPTION, key="spend", now=NOW)
    summary = await points_view.summary(shop.id, member.id, now=NOW)
    assert (summary.balance, summary.pending, summary.lifetime_earned) == (190, 70, 200)
    assert summary.expiring == 30 + 10  # the soonest lot paid for the spend
    assert summary.expiring_first_at == NOW + timedelta(days=5)
    assert await audit_points() == []


async def test_summary_expires_lapsed_points_through_the_ledger(shop: Merchant) -> None:
    member = await make_member(shop)
    await credit(shop, member, 40, "old", expires_in_days=-1)
    await credit(shop, member, 60, "new", expires_in_days=100)
    summary = await points_view.summary(shop.id, member.id, now=NOW)
    assert (summary.balance, summary.lifetime_earned, summary.expiring) == (60, 100, 0)
    page = await points_view.ledger(shop.id, member.id)
    assert (page.rows[0].kind, page.rows[0].delta, page.rows[0].label) == (PointsKind.EXPIRE, -40, "积分过期")
    assert await audit_points() == []


async def test_ledger_pages_newest_first_by_keyset(shop: Merchant) -> None:
    member = await make_member(shop)
    other = await make_member(shop, openid="o-other")
    for n in range(1, 6):
        await credit(shop, member, n, f"k{n}", expires_in_days=None)
    await credit(shop, other, 99, "other", expires_in_days=None)
    first = await points_view.ledger(shop.id, member.id, limit=2)
    assert [r.delta for r in first.rows] == [5, 4] and first.next_cursor == first.rows[-1].id
    assert [r.balance_after for r in first.rows] == [15, 10]
    assert first.rows[0].label == "赠送积分" and first.rows[0].reason == "赠送 k5"
    second = await points_view.ledger(shop.id, member.id, cursor=first.next_cursor, limit=2)
    assert [r.delta for r in second.rows] == [3, 2]
    last = await points_view.ledger(shop.id, member.id, cursor=second.next_cursor, limit=2)
    assert [r.delta for r in last.rows] == [1] and last.next_cursor is None
    exact = await points_view.ledger(shop.id, member.id, limit=5)
    assert len(exact.rows) == 5 and exact.next_cursor is None
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": 0}):
        with pytest.raises(ValidationError):
            await points_view.ledger(shop.id, member.id, **bad)
    assert await audit_points() == []


def test_every_kind_has_a_chinese_label() -> None:
    assert set(points_view.KIND_LABELS) == set(PointsKind)
    assert points_view.kind_label("unknown_kind") == "unknown_kind"
