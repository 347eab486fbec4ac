"""Purchases at the till and their refunds: pricing, points, tiers, idempotency, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.core.errors import Conflict, DomainError, ErrorCode, NotFound, ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger, tiers
from handlers.loyalty.ledger_audit import audit_points
from handlers.staff.accounts import create_staff
from handlers.till.purchase import PurchaseRequest, record_purchase
from handlers.till.refund import refund_purchase
from models.loyalty import TierChange
from models.merchant import Store
from models.points import PointsAccount, PointsKind, PointsPool
from models.purchase import Purchase, PurchaseStatus
from tests.support.factories import EFFECTS, make_member, make_merchant

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    member = await make_member(merchant)
    return merchant, member


async def buy(shop: Any, key: str, amount_fen: int, **extra: Any) -> Any:
    merchant, member = shop
    return await record_purchase(
        merchant, None, PurchaseRequest(key, member.id, amount_fen, **extra), now=NOW, effects=EFFECTS
    )


async def balance(member: Any) -> int:
    account = await PointsAccount.get_or_none(member_id=member.id)
    return account.balance if account else 0


async def test_purchase_earns_points_on_the_amount_paid_with_breakdown(shop: Any) -> None:
    result = await buy(shop, "p1", 12_345)  # 123.45 yuan at 1 point per yuan
    assert result.points_earned == 123 and result.paid_fen == 12_345
    assert sum(line["points"] for line in result.breakdown) == 123
    assert result.balance == 123 and result.rule_set_version == 1
    assert await audit_points() == []


async def test_a_purchase_is_recorded_at_the_cashiers_store_else_the_merchants_first(shop: Any) -> None:
    merchant, member = shop
    first = await Store.filter(merchant_id=merchant.id).order_by("id").first()
    north = await Store.create(merchant=merchant, code="north", name="北店")
    cashier = await create_staff(
        merchant, store_code="north", username="north-till", role="cashier", password="till-password-1"
    )
    owner = await create_staff(
        merchant, store_code=None, username="owner", role="admin", password="owner-password-1"
    )
    at_till = await record_purchase(
        merchant, cashier, PurchaseRequest("n1", member.id, 1_000), now=NOW, effects=EFFECTS
    )
    by_owner = await record_purchase(
        merchant, owner, PurchaseRequest("o1", member.id, 1_000), now=NOW, effects=EFFECTS
    )
    assert (await Purchase.get(id=at_till.purchase_id)).store_id == north.id
    assert first is not None and (await Purchase.get(id=by_owner.purchase_id)).store_id == first.id


async def test_an_unknown_or_foreign_member_is_not_found_and_nothing_is_written(shop: Any) -> None:
    merchant, _ = shop
    other = await make_merchant("other")
    stranger = await make_member(other)
    for member_id in (stranger.id, 999_999):
        with pytest.raises(NotFound):
            await record_purchase(
                merchant, None, PurchaseRequest(f"x{member_id}", member_id, 1_000), now=NOW, effects=EFFECTS
            )
    assert await Purchase.all().count() == 0


async def test_repeated_key_returns_first_result_and_different_request_is_refused(shop: Any) -> None:
    first = await buy(shop, "same", 10_000)
    again = await buy(shop, "same", 10_000)
    assert again.replayed and again.purchase_id == first.purchase_id and again.balance == first.balance
    with pytest.raises(DomainError) as caught:
        await buy(shop, "same", 20_000)
    assert caught.value.code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await Purchase.all().count() == 1 and await balance(shop[1]) == 100


async def test_tier_discount_offset_and_upgrade_with_gift(shop: Any) -> None:
    merchant, member = shop
    await ledger.credit(merchant.id, member.id, 1000, PointsKind.GRANT, key="seed", now=NOW, expires_at=None)
    # 1,000 yuan reaches 银卡 (default ladder); the next purchase gets 9.8折 and the 1.2x multiplier.
    upgrade = await buy(shop, "big", 100_000)
    assert upgrade.tier_changed_to == "silver"
    result = await buy(shop, "next", 10_000, points_offset=1000)
    assert result.discount_fen == 200 and result.offset_fen == 1000 and result.paid_fen == 8800
    assert result.points_earned == 105  # 88 yuan × 1.2 = 105.6 → 105
    assert await TierChange.filter(member_id=member.id).count() == 1
    assert await audit_points() == []


async def test_offset_beyond_the_cap_is_refused_and_changes_nothing(shop: Any) -> None:
    merchant, member = shop
    await ledger.credit(
        merchant.id, member.id, 10_000, PointsKind.GRANT, key="seed", now=NOW, expires_at=None
    )
    with pytest.raises(ValidationError) as caught:
        await buy(shop, "p", 10_000, points_offset=6000)
    assert caught.value.field == "points_offset"
    assert await Purchase.all().count() == 0 and await balance(member) == 10_000


async def test_offset_without_enough_points_is_refused_and_rolls_back(shop: Any) -> None:
    with pytest.raises(ledger.NotEnoughPoints):
        await buy(shop, "p", 10_000, points_offset=1000)
    assert await Purchase.all().count() == 0
    assert await audit_points() == []


async def test_refund_claws_back_points_and_returns_offset_once(shop: Any) -> None:
    merchant, member = shop
    await ledger.credit(merchant.id, member.id, 500, PointsKind.GRANT, key="seed", now=NOW, expires_at=None)
    result = await buy(shop, "p", 10_000, points_offset=500)  # pays 95 yuan, earns 95
    assert await balance(member) == 95
    refund = await refund_purchase(merchant, None, result.purchase_id, key="r1", now=NOW, effects=EFFECTS)
    assert (refund.points_reversed, refund.offset_restored, refund.balance) == (95, 500, 500)
    again = await refund_purchase(merchant, None, result.purchase_id, key="r1", now=NOW, effects=EFFECTS)
    assert again.replayed and again.balance == 500
    with pytest.raises(Conflict):
        await refund_purchase(merchant, None, result.purchase_id, key="r2", now=NOW, effects=EFFECTS)
    assert (await Purchase.get(id=result.purchase_id)).status == PurchaseStatus.REFUNDED
    assert await audit_points() == []


async def test_pending_points_are_voided_by_a_refund_inside_the_window(shop: Any) -> None:
    merchant, member = shop
    await loyalty_config.save_program(merchant.id, {"pending_days": 7}, actor="test")
    kept = await buy(shop, "kept", 10_000)
    refunded = await buy(shop, "refunded", 20_000)
    assert kept.points_pending and await balance(member) == 0
    refund = await refund_purchase(merchant, None, refunded.purchase_id, key="r", now=NOW, effects=EFFECTS)
    assert refund.points_voided == 200 and refund.points_reversed == 0
    await ledger.release_pending(NOW + timedelta(days=7))
    assert await balance(member) == 100
    assert await audit_points() == []


async def test_pool_budget_is_never_exceeded_under_concurrency(shop: Any) -> None:
    merchant, _ = shop
    await PointsPool.create(merchant_id=merchant.id, code="xmas", budget=250)
    await loyalty_config.save_program(merchant.id, {"earn_pool": "xmas"}, actor="test")
    others = [await make_member(merchant, openid=f"o-{i}") for i in range(5)]
    results = await asyncio.gather(
        *(
            record_purchase(merchant, None, PurchaseRequest(f"k{i}", m.id, 10_000), now=NOW, effects=EFFECTS)
            for i, m in enumerate(others)
        )
    )
    assert sum(r.points_earned for r in results) == 250
    assert (await PointsPool.get(code="xmas")).granted == 250
    assert await audit_points() == []


async def test_concurrent_purchases_on_one_member_keep_the_ledger_exact(shop: Any) -> None:
    results = await asyncio.gather(*(buy(shop, f"c{i}", 1_000 + i) for i in range(40)))
    assert await balance(shop[1]) == sum(r.points_earned for r in results) == 40 * 10
    assert len({r.purchase_id for r in results}) == 40
    assert await audit_points() == []


async def test_buying_an_upgrade_with_points(shop: Any) -> None:
    merchant, member = shop
    await ledger.credit(merchant.id, member.id, 6000, PointsKind.GRANT, key="seed", now=NOW, expires_at=None)
    change = await tiers.buy_upgrade(merchant, member.id, "gold", key="up1", now=NOW, effects=EFFECTS)
    assert (change.to_code, change.gift_points) == ("gold", 200)
    assert await balance(member) == 6000 - 5000 + 200
    again = await tiers.buy_upgrade(merchant, member.id, "gold", key="up1", now=NOW, effects=EFFECTS)
    assert again.to_code == "gold" and await balance(member) == 1200
    with pytest.raises(Conflict):
        await tiers.buy_upgrade(merchant, member.id, "gold", key="up2", now=NOW, effects=EFFECTS)
    assert await audit_points() == []


async def coupon_for(merchant: Any, member: Any, key: str = "c1") -> Any:
    from handlers.coupons import issue as coupon_issue
    from handlers.rules.coupons import Terms, Validity

    template = await coupon_issue.create_template(
        merchant,
        coupon_issue.TemplateSpec(
            "满100减20", Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000), Validity(days=30)
        ),
        actor="test",
    )
    return await coupon_issue.issue(merchant, member.id, template.id, source="manual", key=key, now=NOW)


async def test_coupon_and_stored_value_at_the_till_and_their_refund(shop: Any) -> None:
    from handlers.wallet import ledger as wallet
    from models.coupon import Coupon, CouponStatus
    from models.wallet import WalletAccount

    merchant, member = shop
    coupon = await coupon_for(merchant, member)
    await wallet.top_up(
        merchant, member.id, 5_000, key="top", payment_method="cash", now=NOW, effects=EFFECTS
    )
    result = await buy(shop, "p", 12_000, coupon_code=coupon.code, stored_value_fen=3_000)
    assert (result.coupon_fen, result.paid_fen, result.stored_value_fen) == (2_000, 10_000, 3_000)
    assert result.points_earned == 100  # on the 100 yuan paid (cash and stored value alike)
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.USED
    assert (await WalletAccount.get(member_id=member.id)).principal_fen == 2_000
    refund = await refund_purchase(merchant, None, result.purchase_id, key="r", now=NOW, effects=EFFECTS)
    assert (refund.coupons_restored, refund.stored_value_refunded_fen) == (1, 3_000)
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.ISSUED
    assert (await WalletAccount.get(member_id=member.id)).principal_fen == 5_000
    again = await refund_purchase(merchant, None, result.purchase_id, key="r", now=NOW, effects=EFFECTS)
    assert again.replayed and (again.coupons_restored, again.stored_value_refunded_fen) == (1, 3_000)
    assert (await WalletAccount.get(member_id=member.id)).principal_fen == 5_000
    assert await audit_points() == []


async def test_one_coupon_in_two_concurrent_purchases_is_used_once(shop: Any) -> None:
    merchant, member = shop
    coupon = await coupon_for(merchant, member)
    outcomes = await asyncio.gather(
        *(buy(shop, f"k{i}", 15_000, coupon_code=coupon.code) for i in range(5)), return_exceptions=True
    )
    succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(succeeded) == 1 and len(refused) == 4
    assert {e.code for e in refused} == {ErrorCode.COUPON_USED}
    assert await Purchase.all().count() == 1
    assert await audit_points() == []


async def test_paying_more_stored_value_than_the_balance_changes_nothing(shop: Any) -> None:
    from handlers.wallet import ledger as wallet

    merchant, member = shop
    await wallet.top_up(
        merchant, member.id, 1_000, key="top", payment_method="cash", now=NOW, effects=EFFECTS
    )
    with pytest.raises(DomainError) as caught:
        await buy(shop, "p", 5_000, stored_value_fen=2_000)
    assert caught.value.code == ErrorCode.INSUFFICIENT_BALANCE
    assert await Purchase.all().count() == 0 and await balance(member) == 0
    with pytest.raises(ValidationError):
        await buy(shop, "p2", 1_000, stored_value_fen=2_000)  # more than is owed


async def test_an_upgrade_gift_is_given_once_even_if_the_ladder_changes_it(shop: Any) -> None:
    from models.loyalty import MemberTier

    merchant, member = shop
    await ledger.credit(
        merchant.id, member.id, 20_000, PointsKind.GRANT, key="seed", now=NOW, expires_at=None
    )
    first = await tiers.buy_upgrade(merchant, member.id, "gold", key="up1", now=NOW, effects=EFFECTS)
    assert first.gift_points == 200
    await MemberTier.filter(member_id=member.id).update(tier_code="normal")  # dropped back meanwhile
    ladder = [t for t in loyalty_config.DEFAULT_TIERS]
    ladder[2] = {**ladder[2], "benefits": {**ladder[2]["benefits"], "upgrade_gift_points": 300}}
    await loyalty_config.save_tiers(merchant.id, ladder, actor="test")
    again = await tiers.buy_upgrade(merchant, member.id, "gold", key="up2", now=NOW, effects=EFFECTS)
    assert again.gift_points == 0
    assert await balance(member) == 20_000 - 5_000 + 200 - 5_000
    result = await buy(shop, "after", 1_000)  # later purchases are not blocked by the old gift's key
    assert result.points_earned > 0
    assert await audit_points() == []


async def test_a_retry_replays_the_full_payment_split(shop: Any) -> None:
    from handlers.wallet import ledger as wallet

    merchant, member = shop
    await wallet.top_up(
        merchant, member.id, 5_000, key="top", payment_method="cash", now=NOW, effects=EFFECTS
    )
    first = await buy(shop, "split", 10_000, stored_value_fen=3_000)
    row = await Purchase.get(idempotency_key="split")
    assert row.result is not None and row.result["stored_value_fen"] == 3_000
    retry = await buy(shop, "split", 10_000, stored_value_fen=3_000)
    assert (retry.replayed, retry.stored_value_fen, retry.paid_fen) == (True, 3_000, first.paid_fen)


async def test_same_key_for_two_members_at_once_makes_one_purchase(shop: Any) -> None:
    merchant, member = shop
    other = await make_member(merchant, openid="o-other")
    outcomes = await asyncio.gather(
        record_purchase(
            merchant, None, PurchaseRequest("shared", member.id, 1_000), now=NOW, effects=EFFECTS
        ),
        record_purchase(merchant, None, PurchaseRequest("shared", other.id, 1_000), now=NOW, effects=EFFECTS),
        return_exceptions=True,
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], DomainError)
    assert failures[0].code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await Purchase.filter(idempotency_key="shared").count() == 1
    assert await audit_points() == []


async def test_a_refund_returns_points_to_the_pool_they_came_from(shop: Any) -> None:
    merchant, _ = shop
    await PointsPool.create(merchant_id=merchant.id, code="xmas", budget=1_000)
    await loyalty_config.save_program(merchant.id, {"earn_pool": "xmas"}, actor="test")
    in_pool = await buy(shop, "in-pool", 10_000)
    await PointsPool.create(merchant_id=merchant.id, code="spring", budget=1_000)
    await loyalty_config.save_program(merchant.id, {"earn_pool": "spring"}, actor="test")
    await refund_purchase(merchant, None, in_pool.purchase_id, key="r", now=NOW, effects=EFFECTS)
    assert (await PointsPool.get(code="xmas")).granted == 0
    assert (await PointsPool.get(code="spring")).granted == 0


async def test_a_failing_after_commit_step_does_not_fail_the_recorded_purchase(
    shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tier service down")

    monkeypatch.setattr(tiers, "evaluate", broken)
    result = await buy(shop, "p", 10_000)
    assert result.points_earned == 100
    again = await buy(shop, "p", 10_000)
    assert again.replayed and again.balance == result.balance
    assert await audit_points() == []
