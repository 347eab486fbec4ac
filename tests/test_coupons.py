"""Coupon issuance from every source, the states and the expiry job, and the till-side functions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from handlers.core.errors import DomainError, ErrorCode
from handlers.coupons import redeem as coupons
from handlers.coupons.issue import CouponCode, CouponError, TemplateSpec, create_template
from handlers.jobs import run_job
from handlers.loyalty import config as loyalty_config
from handlers.members import registration
from handlers.rules.coupons import Terms, Validity
from handlers.till.purchase import PurchaseRequest, record_purchase
from models.coupon import Coupon, CouponEvent, CouponStatus, CouponTemplate
from models.member import Member
from models.merchant import Merchant, Store
from models.purchase import Purchase
from tests.support.factories import EFFECTS, make_member, make_merchant
from webhooks.appkeys import RUNTIME

NOW = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
FULL_100_OFF_20 = Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000)


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    return await make_member(shop)


async def template(
    shop: Merchant, terms: Terms = FULL_100_OFF_20, validity: Validity | None = None, **extra: Any
) -> CouponTemplate:
    spec = TemplateSpec("满100减20", terms, validity or Validity(days=30), **extra)
    return await create_template(shop, spec, actor="test")


async def purchase(shop: Merchant, member: Member, key: str, amount: int = 20_000) -> Purchase:
    return await Purchase.create(
        merchant_id=shop.id,
        member_id=member.id,
        idempotency_key=key,
        request_digest="-",
        amount_fen=amount,
        paid_fen=amount,
    )


async def refused(call: Any) -> CouponCode:
    with pytest.raises(CouponError) as caught:
        await call
    return caught.value.coupon_code


# Issuance -----------------------------------------------------------------------------------------


async def test_issue_gives_a_coupon_with_code_validity_and_event(shop: Merchant, member: Member) -> None:
    t = await template(shop, validity=Validity(days=1))
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="mall:order-1", now=NOW)
    assert len(coupon.code) == 10 and coupon.status == CouponStatus.ISSUED and coupon.source == "mall"
    assert coupon.valid_from == NOW
    assert coupon.valid_until == datetime(2024, 5, 2, 16, 0, tzinfo=UTC)  # end of 2 May, Shanghai
    assert (await CouponTemplate.get(id=t.id)).issued == 1
    events = await CouponEvent.filter(coupon_id=coupon.id).values_list("kind", flat=True)
    assert events == ["issued"]


async def test_a_repeated_key_returns_the_same_coupon(shop: Merchant, member: Member) -> None:
    t = await template(shop)
    first = await coupons.issue(shop, member.id, t.id, source="mall", key="k1", now=NOW)
    again = await coupons.issue(shop, member.id, t.id, source="mall", key="k1", now=NOW)
    assert again.id == first.id
    assert (await CouponTemplate.get(id=t.id)).issued == 1
    other = await make_member(shop, openid="o-other")
    with pytest.raises(DomainError) as caught:
        await coupons.issue(shop, other.id, t.id, source="mall", key="k1", now=NOW)
    assert caught.value.code == ErrorCode.IDEMPOTENCY_MISMATCH


async def test_inactive_sold_out_limited_and_stale_templates_refuse(shop: Merchant, member: Member) -> None:
    off = await template(shop, active=False)
    assert (
        await refused(coupons.issue(shop, member.id, off.id, source="mall", key="a", now=NOW))
        == CouponCode.INACTIVE
    )
    one = await template(shop, total_stock=1)
    await coupons.issue(shop, member.id, one.id, source="mall", key="b1", now=NOW)
    assert (
        await refused(coupons.issue(shop, member.id, one.id, source="mall", key="b2", now=NOW))
        == CouponCode.OUT_OF_STOCK
    )
    limited = await template(shop, limit_per_member=2)
    for i in range(2):
        await coupons.issue(shop, member.id, limited.id, source="mall", key=f"c{i}", now=NOW)
    assert (
        await refused(coupons.issue(shop, member.id, limited.id, source="mall", key="c9", now=NOW))
        == CouponCode.LIMIT_REACHED
    )
    past = await template(shop, validity=Validity(NOW - timedelta(days=9), NOW - timedelta(days=1)))
    assert (
        await refused(coupons.issue(shop, member.id, past.id, source="mall", key="d", now=NOW))
        == CouponCode.EXPIRED
    )
    other_shop = await make_merchant("other")
    assert (
        await refused(coupons.issue(other_shop, member.id, limited.id, source="mall", key="e", now=NOW))
        == CouponCode.TEMPLATE_NOT_FOUND
    )
    assert await Coupon.all().count() == 3


async def test_fifty_concurrent_issuances_against_stock_ten_give_exactly_ten(shop: Merchant) -> None:
    t = await template(shop, total_stock=10)
    people = [await make_member(shop, openid=f"o-{i}") for i in range(50)]

    async def one(i: int) -> int | CouponCode:
        try:
            return (await coupons.issue(shop, people[i].id, t.id, source="mall", key=f"s{i}", now=NOW)).id
        except CouponError as exc:
            return exc.coupon_code

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(isinstance(r, int) for r in results) == 10
    assert results.count(CouponCode.OUT_OF_STOCK) == 40
    assert await Coupon.filter(template_id=t.id).count() == 10
    assert (await CouponTemplate.get(id=t.id)).issued == 10


async def test_concurrent_issuances_respect_member_limit_and_keys(shop: Merchant, member: Member) -> None:
    t = await template(shop, limit_per_member=3)

    async def one(key: str) -> int | CouponCode:
        try:
            return (await coupons.issue(shop, member.id, t.id, source="mall", key=key, now=NOW)).id
        except CouponError as exc:
            return exc.coupon_code

    results = await asyncio.gather(*(one(f"m{i % 10}") for i in range(30)))  # 10 keys, each thrice
    issued = {r for r in results if isinstance(r, int)}
    assert len(issued) == 3
    assert await Coupon.filter(member_id=member.id).count() == 3
    assert (await CouponTemplate.get(id=t.id)).issued == 3


async def test_a_tier_upgrade_issues_the_tiers_gift_coupons_once(shop: Merchant, member: Member) -> None:
    gift = await template(shop)
    _, ladder = await loyalty_config.current_tiers(shop.id)
    raw = [dict(loyalty_config.DEFAULT_TIERS[i]) for i in range(len(ladder))]
    raw[1]["benefits"] = {**raw[1]["benefits"], "upgrade_gift_coupon_template_ids": [gift.id]}
    await loyalty_config.save_tiers(shop.id, raw, actor="test")
    now = datetime.now(UTC)
    result = await record_purchase(
        shop, None, PurchaseRequest("p1", member.id, 100_000), now=now, effects=EFFECTS
    )
    assert result.tier_changed_to == "silver"
    coupon = await Coupon.get(member_id=member.id)
    assert coupon.template_id == gift.id and coupon.source == "tier_gift"
    assert coupon.issue_key == f"tiergift:{member.id}:silver:{gift.id}"
    await coupons.tier_gift(
        shop,
        member.id,
        loyalty_config.tier_by_code((await loyalty_config.current_tiers(shop.id))[1], "silver"),
        now=datetime.now(UTC),
    )
    assert await Coupon.filter(member_id=member.id).count() == 1


async def test_a_new_follower_gets_the_new_member_coupons(client: Any, shop: Merchant) -> None:
    first, second = await template(shop), await template(shop, Terms("gift", gift_name="咖啡一杯"))
    empty = await template(shop, total_stock=1)
    taker = await make_member(shop, openid="o-taker")
    await coupons.issue(shop, taker.id, empty.id, source="manual", key="x", now=NOW)
    await loyalty_config.save_program(
        shop.id, {"new_member_coupon_template_ids": [first.id, empty.id, second.id]}, actor="test"
    )
    subscription = await registration.subscribe(
        shop, "o-newcomer", "", secret=client.app[RUNTIME].secret, effects=EFFECTS
    )
    assert subscription.created
    mine = await Coupon.filter(member_id=subscription.member.id).order_by("template_id")
    assert [c.template_id for c in mine] == [first.id, second.id]  # the sold-out one is skipped
    assert {c.source for c in mine} == {"new_member"}
    assert mine[0].issue_key == f"newmember:{subscription.member.id}:{first.id}"
    await coupons.new_member_gift(subscription.member, now=datetime.now(UTC))  # a re-run issues nothing new
    assert await Coupon.filter(member_id=subscription.member.id).count() == 2


# Till: quote, use, restore ------------------------------------------------------------------------


async def test_quote_checks_member_window_store_and_threshold(shop: Merchant, member: Member) -> None:
    await Store.create(merchant_id=shop.id, code="east", name="东店")
    t = await template(shop, store_codes=("main",))
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="q", now=NOW)
    found = await coupons.quote(
        shop, member.id, coupon.code.lower(), order_fen=10_000, store_code="main", now=NOW
    )
    assert (found.coupon_id, found.kind, found.discount_fen) == (coupon.id, "fixed", 2_000)
    with pytest.raises(CouponError) as caught:
        await coupons.quote(shop, member.id, coupon.code, order_fen=9_999, store_code="main", now=NOW)
    assert caught.value.coupon_code == CouponCode.NOT_APPLICABLE
    assert caught.value.message == "满 100.00 元可用"
    assert caught.value.code == "coupon_not_applicable"
    assert (
        await refused(
            coupons.quote(shop, member.id, coupon.code, order_fen=10_000, store_code="east", now=NOW)
        )
        == CouponCode.NOT_APPLICABLE
    )
    stranger = await make_member(shop, openid="o-stranger")
    assert (
        await refused(
            coupons.quote(shop, stranger.id, coupon.code, order_fen=10_000, store_code="main", now=NOW)
        )
        == CouponCode.NOT_FOUND
    )
    assert (
        await refused(
            coupons.quote(shop, member.id, "NOSUCHCODE", order_fen=10_000, store_code="main", now=NOW)
        )
        == CouponCode.NOT_FOUND
    )
    later = NOW + timedelta(days=31)  # past valid_until, the expiry job has not run yet
    assert (
        await refused(
            coupons.quote(shop, member.id, coupon.code, order_fen=10_000, store_code="main", now=later)
        )
        == CouponCode.EXPIRED
    )


async def test_percent_and_gift_quotes(shop: Merchant, member: Member) -> None:
    percent = await template(shop, Terms("percent", percent_off=20, cap_fen=1_500))
    gift = await template(shop, Terms("gift", gift_name="咖啡一杯"))
    c1 = await coupons.issue(shop, member.id, percent.id, source="mall", key="p", now=NOW)
    c2 = await coupons.issue(shop, member.id, gift.id, source="mall", key="g", now=NOW)
    q1 = await coupons.quote(shop, member.id, c1.code, order_fen=5_005, store_code=None, now=NOW)
    assert q1.discount_fen == 1_001
    assert (
        await coupons.quote(shop, member.id, c1.code, order_fen=50_000, store_code=None, now=NOW)
    ).discount_fen == 1_500
    q2 = await coupons.quote(shop, member.id, c2.code, order_fen=1, store_code=None, now=NOW)
    assert (q2.kind, q2.discount_fen, q2.gift_name) == ("gift", 0, "咖啡一杯")


async def test_use_marks_used_once_and_restore_gives_it_back(shop: Merchant, member: Member) -> None:
    t = await template(shop)
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="u", now=NOW)
    p1, p2 = await purchase(shop, member, "p1"), await purchase(shop, member, "p2")
    off = await coupons.use(
        shop, coupon.id, purchase_id=p1.id, order_fen=15_000, store_code="main", now=NOW, actor="staff:1"
    )
    assert off == 2_000
    assert (
        await coupons.use(
            shop, coupon.id, purchase_id=p1.id, order_fen=15_000, store_code="main", now=NOW, actor="staff:1"
        )
        == 2_000
    )  # the same purchase again: same answer
    assert (
        await refused(
            coupons.use(
                shop,
                coupon.id,
                purchase_id=p2.id,
                order_fen=15_000,
                store_code="main",
                now=NOW,
                actor="staff:1",
            )
        )
        == CouponCode.USED
    )
    used = await Coupon.get(id=coupon.id)
    assert (used.status, used.used_purchase_id, used.discount_fen, used.used_at) == (
        CouponStatus.USED,
        p1.id,
        2_000,
        NOW,
    )
    assert (
        await refused(
            coupons.quote(shop, member.id, coupon.code, order_fen=15_000, store_code="main", now=NOW)
        )
        == CouponCode.USED
    )
    assert await coupons.restore(shop, p1.id, now=NOW, actor="staff:1") == 1
    assert await coupons.restore(shop, p1.id, now=NOW, actor="staff:1") == 0
    back = await Coupon.get(id=coupon.id)
    assert (back.status, back.used_purchase_id, back.discount_fen) == (CouponStatus.ISSUED, None, 0)
    kinds = await CouponEvent.filter(coupon_id=coupon.id).order_by("id").values_list("kind", flat=True)
    assert kinds == ["issued", "used", "restored"]
    assert (
        await coupons.use(
            shop, coupon.id, purchase_id=p2.id, order_fen=10_000, store_code="main", now=NOW, actor="staff:1"
        )
        == 2_000
    )


async def test_use_refuses_another_members_purchase(shop: Merchant, member: Member) -> None:
    t = await template(shop)
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="u", now=NOW)
    stranger = await make_member(shop, openid="o-stranger")
    theirs = await purchase(shop, stranger, "p-stranger")
    attempt = coupons.use(
        shop, coupon.id, purchase_id=theirs.id, order_fen=15_000, store_code=None, now=NOW, actor="t"
    )
    assert await refused(attempt) == CouponCode.NOT_FOUND
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.ISSUED


async def test_restore_after_the_window_expires_the_coupon(shop: Merchant, member: Member) -> None:
    t = await template(shop, validity=Validity(days=1))
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="r", now=NOW)
    bought = await purchase(shop, member, "p")
    await coupons.use(
        shop, coupon.id, purchase_id=bought.id, order_fen=10_000, store_code=None, now=NOW, actor="t"
    )
    assert await coupons.restore(shop, bought.id, now=NOW + timedelta(days=5), actor="t") == 1
    assert (await Coupon.get(id=coupon.id)).status == CouponStatus.EXPIRED


async def test_twenty_concurrent_uses_of_one_coupon_let_exactly_one_through(
    shop: Merchant, member: Member
) -> None:
    t = await template(shop)
    coupon = await coupons.issue(shop, member.id, t.id, source="mall", key="race", now=NOW)
    bought = [await purchase(shop, member, f"p{i}") for i in range(20)]

    async def scan(i: int) -> int | CouponCode:
        try:
            async with in_transaction():
                return await coupons.use(
                    shop,
                    coupon.id,
                    purchase_id=bought[i].id,
                    order_fen=20_000,
                    store_code="main",
                    now=NOW,
                    actor=f"till:{i}",
                )
        except CouponError as exc:
            return exc.coupon_code

    results = await asyncio.gather(*(scan(i) for i in range(20)))
    assert results.count(2_000) == 1
    assert results.count(CouponCode.USED) == 19
    assert await CouponEvent.filter(coupon_id=coupon.id, kind="used").count() == 1


# States: revoke and expiry ------------------------------------------------------------------------


async def test_the_expiry_job_expires_due_coupons_once(shop: Merchant, member: Member) -> None:
    short = await template(shop, validity=Validity(days=1))
    long = await template(shop, validity=Validity(days=30))
    due = await coupons.issue(shop, member.id, short.id, source="mall", key="a", now=NOW)
    keep = await coupons.issue(shop, member.id, long.id, source="mall", key="b", now=NOW)
    later = NOW + timedelta(days=3)
    assert await run_job("coupon_expiry", later, EFFECTS) == {"expired": 1}
    assert await run_job("coupon_expiry", later, EFFECTS) == {"expired": 0}
    assert (await Coupon.get(id=due.id)).status == CouponStatus.EXPIRED
    assert (await Coupon.get(id=keep.id)).status == CouponStatus.ISSUED
    assert await CouponEvent.filter(coupon_id=due.id, kind="expired").count() == 1
    assert (
        await refused(coupons.quote(shop, member.id, due.code, order_fen=10_000, store_code=None, now=NOW))
        == CouponCode.EXPIRED
    )
