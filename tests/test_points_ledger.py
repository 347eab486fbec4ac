"""The points ledger: postings, idempotency, lots and expiry, pending points, claw-back, audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import DomainError, ErrorCode
from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from models.points import PointsAccount, PointsKind, PointsTransaction
from tests.support.factories import make_member, make_merchant

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def member(client: Any) -> Any:
    merchant = await make_merchant()
    return await make_member(merchant)


async def balance(member: Any) -> int:
    return (await PointsAccount.get(member_id=member.id)).balance


async def earn(member: Any, amount: int, key: str, expires: datetime | None = None) -> ledger.Posted:
    return await ledger.credit(
        member.merchant_id, member.id, amount, PointsKind.GRANT, key=key, now=NOW, expires_at=expires
    )


async def spend(member: Any, amount: int, key: str, now: datetime = NOW) -> ledger.Posted:
    return await ledger.debit(
        member.merchant_id, member.id, amount, PointsKind.SPEND_REDEMPTION, key=key, now=now
    )


async def test_credit_then_debit_keeps_balance_and_ledger(member: Any) -> None:
    first = await earn(member, 100, "e1")
    second = await spend(member, 30, "s1")
    assert (first.balance_after, second.balance_after) == (100, 70)
    rows = (
        await PointsTransaction.filter(member_id=member.id)
        .order_by("id")
        .values_list("delta", "balance_after")
    )
    assert rows == [(100, 100), (-30, 70)]
    assert await audit_points() == []


async def test_repeated_key_returns_first_result_unchanged(member: Any) -> None:
    first = await earn(member, 100, "same")
    again = await earn(member, 100, "same")
    assert again.replayed and again.transaction_id == first.transaction_id and again.balance_after == 100
    assert await balance(member) == 100


async def test_key_reused_for_different_request_is_refused(member: Any) -> None:
    await earn(member, 100, "k")
    with pytest.raises(DomainError) as caught:
        await earn(member, 50, "k")
    assert caught.value.code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await balance(member) == 100


async def test_overspend_is_refused_and_changes_nothing(member: Any) -> None:
    await earn(member, 10, "e")
    with pytest.raises(ledger.NotEnoughPoints):
        await spend(member, 11, "s")
    assert await balance(member) == 10
    assert await PointsTransaction.filter(member_id=member.id).count() == 1


async def test_spend_takes_soonest_expiring_lot_first_and_expiry_takes_the_rest(member: Any) -> None:
    await earn(member, 50, "late", NOW + 60 * DAY)
    await earn(member, 50, "soon", NOW + 10 * DAY)
    await earn(member, 50, "never")
    await spend(member, 60, "s")  # all of "soon" (50) and 10 of "late"
    expired = await ledger.expire_lapsed(NOW + 30 * DAY)
    assert expired == 0  # "soon" was fully spent: nothing lapsed yet
    assert await ledger.expire_lapsed(NOW + 61 * DAY) == 1
    assert await balance(member) == 50  # only the never-expiring lot is left
    assert await ledger.expire_lapsed(NOW + 61 * DAY) == 0  # idempotent
    kinds = await PointsTransaction.filter(member_id=member.id, kind=PointsKind.EXPIRE).values_list(
        "delta", flat=True
    )
    assert kinds == [-40]
    assert await audit_points() == []


async def test_lapsed_points_cannot_be_spent_even_before_the_job_runs(member: Any) -> None:
    await earn(member, 50, "soon", NOW + DAY)
    with pytest.raises(ledger.NotEnoughPoints):
        await spend(member, 10, "s", now=NOW + 2 * DAY)
    assert await balance(member) == 50  # a refused debit changes nothing; the expiry job takes them
    assert await ledger.expire_lapsed(NOW + 2 * DAY) == 1
    assert await balance(member) == 0
    assert await audit_points() == []


async def test_pending_points_release_after_window_or_void_inside_it(member: Any) -> None:
    merchant_id = member.merchant_id
    await ledger.hold_pending(
        merchant_id, member.id, 80, key="p1", now=NOW, available_at=NOW + 7 * DAY, expires_at=None
    )
    await ledger.hold_pending(
        merchant_id, member.id, 20, key="p2", now=NOW, available_at=NOW + 7 * DAY, expires_at=None
    )
    account = await PointsAccount.get(member_id=member.id)
    assert (account.balance, account.pending) == (0, 100)
    assert await ledger.void_pending(merchant_id, member.id, "p2") is True
    assert await ledger.void_pending(merchant_id, member.id, "p2") is False
    assert await ledger.release_pending(NOW + 6 * DAY) == 0
    assert await ledger.release_pending(NOW + 7 * DAY) == 1
    assert await ledger.release_pending(NOW + 8 * DAY) == 0
    account = await PointsAccount.get(member_id=member.id)
    assert (account.balance, account.pending) == (80, 0)
    assert (
        await ledger.void_pending(merchant_id, member.id, "p1") is False
    )  # released: must be reversed instead
    assert await audit_points() == []


async def test_reversing_a_spend_restores_its_lots(member: Any) -> None:
    await earn(member, 100, "e", NOW + 10 * DAY)
    await spend(member, 70, "s")
    posted = await ledger.reverse(member.merchant_id, "s", key="r", now=NOW)
    assert posted.delta == 70 and posted.balance_after == 100
    again = await ledger.reverse(member.merchant_id, "s", key="r", now=NOW)
    assert again.replayed and again.transaction_id == posted.transaction_id
    with pytest.raises(DomainError) as caught:
        await ledger.reverse(member.merchant_id, "s", key="r2", now=NOW)
    assert caught.value.code == ErrorCode.CONFLICT
    assert await ledger.expire_lapsed(NOW + 11 * DAY) == 1  # restored points keep their original expiry
    assert await balance(member) == 0
    assert await audit_points() == []


async def test_claw_back_of_spent_points_leaves_a_debt_repaid_by_the_next_earn(member: Any) -> None:
    await earn(member, 100, "purchase")
    await spend(member, 80, "s")
    posted = await ledger.reverse(member.merchant_id, "purchase", key="refund", now=NOW)
    assert posted.balance_after == -80
    assert await audit_points() == []
    with pytest.raises(ledger.NotEnoughPoints):
        await spend(member, 1, "s2")
    await earn(member, 100, "e2")
    assert await balance(member) == 20
    await spend(member, 20, "s3")
    assert await audit_points() == []


async def test_concurrent_mutations_on_one_member_never_lose_an_update(member: Any) -> None:
    await earn(member, 1000, "seed")

    async def one(i: int) -> int:
        try:
            if i % 2:
                return (await spend(member, 9, f"s{i}")).delta
            return (await earn(member, 5, f"e{i}")).delta
        except ledger.NotEnoughPoints:
            return 0

    deltas = await asyncio.gather(*(one(i) for i in range(200)))
    assert await balance(member) == 1000 + sum(deltas)
    assert await balance(member) >= 0
    assert await PointsTransaction.filter(member_id=member.id).count() == 1 + sum(1 for d in deltas if d)
    assert await audit_points() == []


async def test_concurrent_requests_with_one_key_post_once(member: Any) -> None:
    await earn(member, 500, "seed")
    results = await asyncio.gather(*(spend(member, 100, "dup") for _ in range(30)))
    assert len({r.transaction_id for r in results}) == 1
    assert await balance(member) == 400
    assert await audit_points() == []


async def test_posting_for_an_unknown_or_foreign_member_is_member_not_found(member: Any) -> None:
    other = await make_merchant("other")
    for merchant_id, member_id in ((member.merchant_id, 10_000), (other.id, member.id)):
        with pytest.raises(DomainError) as caught:
            await ledger.credit(
                merchant_id, member_id, 5, PointsKind.GRANT, key=f"k{merchant_id}", now=NOW, expires_at=None
            )
        assert caught.value.code == ErrorCode.MEMBER_NOT_FOUND
    assert await PointsAccount.filter(member_id=10_000).count() == 0


async def test_refunded_spend_into_an_expired_lot_expires_again_under_a_new_key(member: Any) -> None:
    await earn(member, 100, "e", NOW + DAY)
    await spend(member, 60, "s")
    assert await ledger.expire_lapsed(NOW + 2 * DAY) == 1  # the 40 left lapse
    await ledger.reverse(member.merchant_id, "s", key="r", now=NOW + 3 * DAY)  # 60 back into the lapsed lot
    assert await ledger.expire_lapsed(NOW + 3 * DAY) == 1  # they lapse again: a second, distinct expiry
    assert await balance(member) == 0
    await earn(member, 10, "e2")
    await spend(member, 10, "s2", now=NOW + 3 * DAY)  # later debits are not blocked
    assert await audit_points() == []


async def test_reversing_an_earn_whose_lot_lapsed_takes_the_points_once(member: Any) -> None:
    await earn(member, 100, "purchase", NOW + DAY)
    posted = await ledger.reverse(member.merchant_id, "purchase", key="refund", now=NOW + 2 * DAY)
    assert posted.delta == 0
    assert await ledger.expire_lapsed(NOW + 3 * DAY) == 0
    assert await balance(member) == 0  # the lapse took them; the reversal takes nothing more
    assert await audit_points() == []


async def test_reversing_a_half_lapsed_half_spent_earn_takes_only_the_spent_half(member: Any) -> None:
    await earn(member, 100, "purchase", NOW + DAY)
    await spend(member, 50, "s")
    posted = await ledger.reverse(member.merchant_id, "purchase", key="refund", now=NOW + 2 * DAY)
    assert posted.delta == -50 and posted.balance_after == -50  # the spent half becomes the documented debt
    assert await audit_points() == []


def test_earn_kinds_are_exactly_the_kinds_named_earn() -> None:
    # handlers.loyalty.tiers counts points earned with `kind LIKE 'earn%'`: no other kind may start "earn".
    earn = {kind for kind in PointsKind if kind.value.startswith("earn")}
    assert earn == {k for k in PointsKind if k.name.startswith("EARN_")}
    assert all(kind.value.startswith("earn_") for kind in earn)


async def test_ledger_rows_are_append_only_in_the_database(member: Any) -> None:
    """Whatever code runs, a posting once written cannot be changed or removed."""
    posted = await earn(member, 10, "append-only")
    with pytest.raises(OperationalError, match="append-only"):
        await PointsTransaction.filter(id=posted.transaction_id).update(delta=1000)
    with pytest.raises(OperationalError, match="append-only"):
        await PointsTransaction.filter(id=posted.transaction_id).delete()
    assert (await PointsTransaction.get(id=posted.transaction_id)).delta == 10


async def test_the_writer_refuses_to_take_a_balance_below_zero(member: Any) -> None:
    """The last line of defence below the Python checks: a debit posting may never go negative."""
    await earn(member, 5, "small")
    account = await PointsAccount.get(member_id=member.id)
    with pytest.raises(IntegrityError, match="below zero"):
        async with in_transaction():
            await queries.fetch_rows(
                "SELECT * FROM memberbot_points_post("
                " :account, -6, 'spend_redemption', 'too-much', '', 'test', '', NULL, false, 0)",
                account=account.id,
            )
    assert await balance(member) == 5
    assert await audit_points() == []
