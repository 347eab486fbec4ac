"""The mall order core: redemption rules, idempotency, cancel and expiry returning exactly once, and the
contracts flash sales and group deals build on (`place_order`, `open_pickup`, `return_order`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers import jobs
from handlers.core.errors import Conflict, DomainError, ErrorCode, ValidationError
from handlers.core.queries import sum_of
from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import catalogue
from handlers.mall.orders import OrderClosed, expire_pickups
from handlers.members.lookup import CODE_ALPHABET
from handlers.wallet import ledger as wallet
from models.coupon import Coupon, CouponKind, CouponTemplate
from models.loyalty import MemberTier
from models.mall import FlashSale, ItemKind, MallItem, MallOrder, OrderStatus, StockMovement
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsTransaction
from tests.support.factories import EFFECTS, make_member, make_merchant

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


async def give(shop: Merchant, member: Member, amount: int, key: str = "seed") -> None:
    await ledger.credit(
        shop.id, member.id, amount, PointsKind.GRANT, key=f"{key}:{member.id}", now=NOW, expires_at=None
    )


async def balance(member: Member) -> int:
    account = await PointsAccount.get_or_none(member_id=member.id)
    return account.balance if account else 0


async def make_item(
    shop: Merchant, *, stock: int = 10, kind: ItemKind = ItemKind.PICKUP, **fields: Any
) -> MallItem:
    data = catalogue.ItemInput(**{"name": "保温杯", "price_points": 100, **fields})
    return await catalogue.create_item(shop, kind, data, stock=stock, actor="test")


async def redeem(
    shop: Merchant,
    member: Member,
    item: MallItem,
    key: str = "k1",
    qty: int = 1,
    now: datetime = NOW,
    **extra: Any,
) -> MallOrder:
    order, _ = await catalogue.redeem(
        shop, member, item.id, qty=qty, client_key=key, now=now, **extra, effects=EFFECTS
    )
    return order


async def movements_sum(item: MallItem) -> int:
    return await sum_of(StockMovement.filter(item_id=item.id), "delta")


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    member = await make_member(shop)
    await give(shop, member, 1000)
    return member


async def test_pickup_redemption_debits_points_takes_stock_and_issues_a_code(
    shop: Merchant, member: Member
) -> None:
    item = await make_item(shop, pickup_days=7, cash_fen=500)
    order = await redeem(shop, member, item, qty=2)
    assert (order.status, order.points, order.cash_fen) == (OrderStatus.AWAITING_PICKUP, 200, 1000)
    code = order.pickup_code or ""
    assert len(code) == 8 and set(code) <= set(CODE_ALPHABET) and order.open_pickup_code == code
    assert order.pickup_deadline == NOW + timedelta(days=7)
    assert await balance(member) == 800
    debit = await PointsTransaction.get(idempotency_key=f"mall:mp:{member.id}:k1")
    assert (debit.kind, debit.delta) == (PointsKind.SPEND_REDEMPTION, -200)
    assert (await MallItem.get(id=item.id)).stock == 8
    redeemed = await StockMovement.get(idempotency_key=f"mall:mp:{member.id}:k1:stock")
    assert (redeemed.reason, redeemed.delta, redeemed.stock_after) == ("redeem", -2, 8)
    assert await movements_sum(item) == 8
    assert await audit_points() == []


async def assert_refused(
    shop: Merchant, member: Member, item: MallItem, message: str, field: str, **kwargs: Any
) -> None:
    before = (await balance(member), (await MallItem.get(id=item.id)).stock, await MallOrder.all().count())
    with pytest.raises(DomainError) as caught:
        await redeem(shop, member, item, **kwargs)
    assert message in caught.value.message and caught.value.field == field
    assert caught.value.code in (ErrorCode.CONFLICT, ErrorCode.INSUFFICIENT_POINTS)
    after = (await balance(member), (await MallItem.get(id=item.id)).stock, await MallOrder.all().count())
    assert after == before
    assert await audit_points() == []


async def test_lifetime_limit_counts_every_order_not_returned(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, limit_per_member=2)
    first = await redeem(shop, member, item, key="a")
    await redeem(shop, member, item, key="b")
    await assert_refused(shop, member, item, "超过每人限兑", "limit_per_member", key="c")
    await catalogue.cancel(shop, member, first.id, now=NOW)  # a returned order frees its unit
    await redeem(shop, member, item, key="c")


async def test_daily_limit_resets_at_the_merchants_local_midnight(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, limit_per_day=1)
    before_midnight = datetime(2026, 3, 10, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
    await redeem(shop, member, item, key="a", now=before_midnight)
    await assert_refused(
        shop,
        member,
        item,
        "今日已达上限",
        "limit_per_day",
        key="b",
        now=before_midnight + timedelta(seconds=30),
    )
    await redeem(shop, member, item, key="b", now=before_midnight + timedelta(minutes=1))  # 00:00 local


async def test_tier_restriction(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, min_tier_rank=2)
    await assert_refused(shop, member, item, "等级不足", "tier")
    await MemberTier.create(merchant_id=shop.id, member_id=member.id, tier_code="gold", since=NOW)
    assert (await redeem(shop, member, item)).status == OrderStatus.AWAITING_PICKUP


async def test_sale_window_and_inactive_items(shop: Merchant, member: Member) -> None:
    item = await make_item(
        shop, sale_starts_at=NOW + timedelta(hours=1), sale_ends_at=NOW + timedelta(days=1)
    )
    await assert_refused(shop, member, item, "不在兑换时间内", "sale_window")
    await assert_refused(shop, member, item, "不在兑换时间内", "sale_window", now=NOW + timedelta(days=1))
    await redeem(shop, member, item, now=NOW + timedelta(hours=1))
    hidden = await make_item(shop, active=False)
    await assert_refused(shop, member, hidden, "已下架", "item_id", key="k2")


async def test_stock_and_points_shortfalls_change_nothing(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, stock=1)
    await assert_refused(shop, member, item, "库存不足", "stock", qty=2)
    pricey = await make_item(shop, price_points=2000)
    await assert_refused(shop, member, pricey, "积分不足", "points")
    assert await StockMovement.filter(reason="redeem").count() == 0


async def test_replayed_key_returns_the_first_order_and_a_changed_request_is_refused(
    shop: Merchant, member: Member
) -> None:
    item = await make_item(shop)
    first, replayed_first = await catalogue.redeem(
        shop, member, item.id, qty=1, client_key="same", now=NOW, effects=EFFECTS
    )
    again, replayed = await catalogue.redeem(
        shop, member, item.id, qty=1, client_key="same", now=NOW, effects=EFFECTS
    )
    assert (again.id, replayed_first, replayed) == (first.id, False, True)
    with pytest.raises(DomainError) as caught:
        await catalogue.redeem(shop, member, item.id, qty=2, client_key="same", now=NOW, effects=EFFECTS)
    assert caught.value.code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await balance(member) == 900 and (await MallItem.get(id=item.id)).stock == 9
    assert await audit_points() == []


async def test_shipped_items_need_a_valid_address_and_others_refuse_one(
    shop: Merchant, member: Member
) -> None:
    shipped = await make_item(shop, kind=ItemKind.SHIPPED)
    with pytest.raises(ValidationError) as caught:
        await redeem(shop, member, shipped)
    assert caught.value.field == "address"
    bad = {"name": "张三", "phone": "12345", "region": "上海市", "detail": "徐汇区 1 号"}
    with pytest.raises(ValidationError) as caught:
        await redeem(shop, member, shipped, address=bad)
    assert caught.value.field == "address.phone"
    order = await redeem(shop, member, shipped, address={**bad, "phone": "+86 138-0013-8000"})
    assert order.status == OrderStatus.TO_SHIP and order.pickup_code is None
    assert order.address == {**bad, "phone": "13800138000"}
    pickup = await make_item(shop)
    with pytest.raises(ValidationError):
        await redeem(shop, member, pickup, key="k2", address=order.address)
    assert await balance(member) == 900


async def test_cancel_returns_points_and_stock_exactly_once(shop: Merchant, member: Member) -> None:
    item = await make_item(shop)
    order = await redeem(shop, member, item, qty=3)
    cancelled = await catalogue.cancel(shop, member, order.id, now=NOW)
    assert (cancelled.status, cancelled.open_pickup_code, cancelled.closed_at) == (
        OrderStatus.CANCELLED,
        None,
        NOW,
    )
    with pytest.raises(OrderClosed) as caught:
        await catalogue.cancel(shop, member, order.id, now=NOW)
    assert "已取消" in caught.value.message
    assert await balance(member) == 1000 and (await MallItem.get(id=item.id)).stock == 10
    assert await StockMovement.filter(item_id=item.id, reason="cancel").count() == 1
    assert await movements_sum(item) == 10
    assert await audit_points() == []


async def test_expiry_job_returns_overdue_pickups_once(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, pickup_days=3)
    overdue = await redeem(shop, member, item, key="a")
    fresh = await redeem(shop, member, item, key="b", now=NOW + timedelta(days=2))
    assert await expire_pickups(NOW + timedelta(days=3) - timedelta(seconds=1)) == {"expired_orders": 0}
    assert await jobs.run_job("mall_pickup_expiry", NOW + timedelta(days=3), EFFECTS) == {"expired_orders": 1}
    assert await expire_pickups(NOW + timedelta(days=3, hours=1)) == {"expired_orders": 0}
    expired = await MallOrder.get(id=overdue.id)
    assert (expired.status, expired.open_pickup_code) == (OrderStatus.EXPIRED, None)
    assert (await MallOrder.get(id=fresh.id)).status == OrderStatus.AWAITING_PICKUP
    assert await balance(member) == 900 and (await MallItem.get(id=item.id)).stock == 9
    with pytest.raises(Conflict):
        await catalogue.cancel(shop, member, overdue.id, now=NOW + timedelta(days=4))
    assert await movements_sum(item) == 9
    assert await audit_points() == []


async def test_coupon_and_stored_value_items_are_delivered_at_once(shop: Merchant, member: Member) -> None:
    template = await CouponTemplate.create(
        merchant_id=shop.id,
        name="满100减10",
        kind=CouponKind.FIXED,
        threshold_fen=10_000,
        amount_off_fen=1_000,
        valid_days=30,
    )
    coupon_item = await make_item(shop, kind=ItemKind.COUPON, coupon_template_id=template.id)
    order = await redeem(shop, member, coupon_item, key="c", qty=2)
    assert order.status == OrderStatus.FULFILLED and order.pickup_code is None
    issued = await Coupon.filter(member_id=member.id).order_by("id")
    assert [c.issue_key for c in issued] == [f"mall:mp:{member.id}:c", f"mall:mp:{member.id}:c:2"]
    assert {c.source for c in issued} == {"mall"}
    topup = await make_item(shop, kind=ItemKind.STORED_VALUE, stored_value_fen=5_000)
    assert (await redeem(shop, member, topup, key="s")).status == OrderStatus.FULFILLED
    assert (await wallet.balance(shop.id, member.id)).bonus_fen == 5_000
    with pytest.raises(OrderClosed):  # delivered: nothing to cancel
        await catalogue.cancel(shop, member, order.id, now=NOW)
    assert await balance(member) == 700
    assert await audit_points() == []


async def test_group_orders_wait_for_open_pickup_or_are_refunded(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, pickup_days=2)
    pending = await catalogue.place_order(
        shop, member, item, qty=1, points=50, key="g1", now=NOW, status=OrderStatus.PENDING_GROUP
    )
    assert (pending.status, pending.pickup_code) == (OrderStatus.PENDING_GROUP, None)
    with pytest.raises(OrderClosed):
        await catalogue.cancel(shop, member, pending.id, now=NOW)
    opened = await catalogue.open_pickup(pending.id, now=NOW + timedelta(hours=5))
    assert opened.status == OrderStatus.AWAITING_PICKUP and opened.pickup_code
    assert opened.pickup_deadline == NOW + timedelta(hours=5, days=2)
    again = await catalogue.open_pickup(pending.id, now=NOW + timedelta(hours=6))
    assert again.pickup_code == opened.pickup_code
    failed = await catalogue.place_order(
        shop, member, item, qty=1, points=50, key="g2", now=NOW, status=OrderStatus.PENDING_GROUP
    )
    await catalogue.return_order(failed.id, reason="group_refund", now=NOW, actor="system")
    with pytest.raises(OrderClosed):
        await catalogue.return_order(failed.id, reason="group_refund", now=NOW, actor="system")
    with pytest.raises(OrderClosed):
        await catalogue.open_pickup(failed.id, now=NOW)
    assert (await MallOrder.get(id=failed.id)).status == OrderStatus.GROUP_FAILED
    assert await balance(member) == 950 and (await MallItem.get(id=item.id)).stock == 9
    assert await audit_points() == []


async def test_flash_orders_skip_the_stock_and_window_checks(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, stock=0, sale_ends_at=NOW - timedelta(days=1))
    sale = await FlashSale.create(
        merchant_id=shop.id,
        item_id=item.id,
        price_points=10,
        stock=1,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    order = await catalogue.place_order(
        shop, member, item, qty=1, points=10, key="flash:1", now=NOW, flash_sale_id=sale.id, take_stock=False
    )
    assert (order.status, order.flash_sale_id, order.points) == (OrderStatus.AWAITING_PICKUP, sale.id, 10)
    assert (await MallItem.get(id=item.id)).stock == 0
    assert await StockMovement.filter(reason="redeem").count() == 0
    with pytest.raises(Conflict):  # without a sale the window and the stock apply
        await catalogue.place_order(shop, member, item, qty=1, points=10, key="plain:1", now=NOW)
    await catalogue.cancel(shop, member, order.id, now=NOW)  # the unit goes back to the item's stock
    assert (await MallItem.get(id=item.id)).stock == 1 and await movements_sum(item) == 1
    assert await balance(member) == 1000
    assert await audit_points() == []


async def test_fifty_concurrent_redemptions_never_oversell(shop: Merchant) -> None:
    item = await make_item(shop, stock=10, limit_per_member=1)
    members = [await make_member(shop, openid=f"o-{i}") for i in range(20)]
    for one in members:
        await give(shop, one, 500)
    attempts = [(members[i % 20], f"try{i}") for i in range(50)]
    results = await asyncio.gather(
        *(redeem(shop, who, item, key=key) for who, key in attempts), return_exceptions=True
    )
    placed = [r for r in results if isinstance(r, MallOrder)]
    refused = [r for r in results if not isinstance(r, MallOrder)]
    assert len(placed) == 10 and all(isinstance(r, Conflict) for r in refused), refused[:3]
    assert len({o.member_id for o in placed}) == 10
    assert (await MallItem.get(id=item.id)).stock == 0
    assert await movements_sum(item) == 0 and await StockMovement.filter(stock_after__lt=0).count() == 0
    assert await MallOrder.all().count() == 10
    assert len({o.pickup_code for o in placed}) == 10
    assert await audit_points() == []


async def test_concurrent_cancel_and_expiry_return_once(shop: Merchant, member: Member) -> None:
    item = await make_item(shop, pickup_days=1)
    orders = [await redeem(shop, member, item, key=f"k{i}") for i in range(5)]
    later = NOW + timedelta(days=2)
    jobs = [expire_pickups(later), expire_pickups(later)]
    cancels = [catalogue.cancel(shop, member, o.id, now=later) for o in orders]
    await asyncio.gather(*jobs, *cancels, return_exceptions=True)
    statuses = {o.status for o in await MallOrder.all()}
    assert statuses <= {OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    assert await balance(member) == 1000 and (await MallItem.get(id=item.id)).stock == 10
    assert await PointsTransaction.filter(kind=PointsKind.REVERSE).count() == 5
    assert await movements_sum(item) == 10
    assert await audit_points() == []


async def test_concurrent_retries_of_one_key_place_one_order(shop: Merchant, member: Member) -> None:
    item = await make_item(shop)
    results = await asyncio.gather(
        *(
            catalogue.redeem(shop, member, item.id, qty=2, client_key="retry", now=NOW, effects=EFFECTS)
            for _ in range(10)
        )
    )
    assert len({order.id for order, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 9
    assert await balance(member) == 800 and (await MallItem.get(id=item.id)).stock == 8
    assert await audit_points() == []
