"""Automatic tags on PostgreSQL: each rule type selects exactly the expected members (RFM's eight classic
segments from constructed purchases), recomputation adds and removes with history, and a rule change
recomputes that tag only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.core import queries
from handlers.loyalty import ledger
from handlers.rules.tag_rules import RFM_SEGMENTS
from handlers.tags import assign, catalogue, recompute
from models.coupon import Coupon, CouponTemplate
from models.loyalty import MemberTier
from models.member import Member
from models.merchant import Merchant, Store
from models.points import PointsKind
from models.product import Product
from models.purchase import Purchase, PurchaseStatus
from models.staff import Staff
from models.tag import MemberTag, MemberTagHistory, Tag
from models.task import Task, TaskStatus
from tests.support.factories import EFFECTS, make_member, make_merchant

NOW = datetime(2026, 6, 15, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
TODAY = date(2026, 6, 15)
TZ = "Asia/Shanghai"
ACTOR = "staff:1"


@dataclass
class World:
    shop: Merchant
    by_name: dict[str, Member]
    ids: dict[int, str]
    store: Store
    staff: Staff
    template: CouponTemplate

    def names(self, member_ids: list[int]) -> set[str]:
        return {self.ids[i] for i in member_ids}


async def buy(
    shop: Merchant,
    member: Member,
    days_ago: float,
    paid_fen: int,
    *,
    items: list[dict[str, Any]] | None = None,
    refunded: bool = False,
) -> None:
    at = NOW - timedelta(days=days_ago)
    purchase = await Purchase.create(
        merchant_id=shop.id,
        member_id=member.id,
        idempotency_key=f"p-{member.id}-{days_ago}-{paid_fen}",
        request_digest="x",
        amount_fen=paid_fen,
        paid_fen=paid_fen,
        items=items or [],
        status=PurchaseStatus.REFUNDED if refunded else PurchaseStatus.COMPLETED,
    )
    await Purchase.filter(id=purchase.id).update(created_at=at)


def item(sku: str, category: str, qty: int, unit_price_fen: int) -> dict[str, Any]:
    return {"sku": sku, "category": category, "qty": qty, "unit_price_fen": unit_price_fen}


async def build(shop: Merchant) -> World:
    store = await Store.get(merchant_id=shop.id, code="main")
    east = await Store.create(merchant_id=shop.id, code="east", name="东区店")
    staff = await Staff.create(
        merchant_id=shop.id, store_id=store.id, username="seller", role="cashier", password_hash="x"
    )
    people: dict[str, dict[str, Any]] = {
        # RFM (window 365 days; recent: within 30 days; frequent: >= 3 purchases; big: >= 100000 fen)
        "A": dict(gender="female", birthday=date(1990, 6, 15), store_id=store.id),  # 重要价值
        "B": dict(gender="male", birthday=date(2000, 1, 1), store_id=east.id, acquired_by_id=staff.id),
        "C": dict(gender="female", birthday=date(1966, 6, 16)),  # 重要保持
        "D": dict(gender="undisclosed"),  # 重要挽留
        "E": dict(birthday=date(2008, 6, 15)),  # 一般价值
        "F": dict(source="mini_program"),  # 一般发展
        "G": dict(source="import"),  # 一般保持
        "H": dict(),  # 一般挽留
        "I": dict(),  # only an old purchase: outside the window
        "J": dict(gender="female"),  # erased
    }
    by_name = {}
    for name, fields in people.items():
        by_name[name] = await make_member(shop, openid=f"o-{name}", **fields)
    m = by_name
    await buy(shop, m["A"], 10, 40_000, items=[item("TEA-1", "茶饮", 2, 20_000)])
    await buy(shop, m["A"], 20, 40_000, items=[item("CAKE-1", "烘焙", 1, 40_000)])
    await buy(shop, m["A"], 100, 40_000, items=[item("TEA-1", "茶饮", 1, 40_000)])
    await buy(shop, m["B"], 5, 150_000, items=[item("CAKE-1", "烘焙", 3, 50_000)])
    await buy(shop, m["C"], 60, 30_000)
    await buy(shop, m["C"], 90, 30_000)
    await buy(shop, m["C"], 120, 40_000)  # exactly 100000: big
    await buy(shop, m["D"], 200, 200_000)
    for days in (1, 2, 3, 4):
        await buy(shop, m["E"], days, 1_000)
    await buy(shop, m["F"], 1, 1_000, items=[item("OLD-SKU", "零食", 1, 1_000)])
    for days in (40, 50, 60):
        await buy(shop, m["G"], days, 1_000)
    await buy(shop, m["H"], 300, 500)
    await buy(shop, m["H"], 2, 999_999, refunded=True)  # a refunded purchase counts for nothing
    await buy(shop, m["I"], 400, 500_000)
    for days in (1, 2, 3):
        await buy(shop, m["J"], days, 100_000)
    await Member.filter(id=m["J"].id).update(anonymized_at=NOW - timedelta(days=1))
    # The catalogue files OLD-SKU under 烘焙 now: the product's category wins over the till's.
    await Product.create(merchant_id=shop.id, sku="OLD-SKU", name="旧饼", category="烘焙", price_fen=1_000)
    # The purchase trigger stamps visits at insert time; the purchases above were back-dated after it.
    await queries.fetch_rows(
        "UPDATE member m SET last_visit_at ="
        " (SELECT max(created_at) FROM purchase p WHERE p.member_id = m.id) WHERE m.merchant_id = :merchant",
        merchant=shop.id,
    )
    await MemberTier.create(merchant_id=shop.id, member_id=m["A"].id, tier_code="gold", since=NOW)
    await MemberTier.create(merchant_id=shop.id, member_id=m["B"].id, tier_code="silver", since=NOW)
    for n, (name, points) in enumerate({"A": 500, "B": 2_000, "C": 10}.items()):
        await ledger.credit(
            shop.id, m[name].id, points, PointsKind.GRANT, key=f"seed:{n}", now=NOW, expires_at=None
        )
    template = await CouponTemplate.create(
        merchant_id=shop.id, name="满100减20", kind="fixed", amount_off_fen=2000
    )
    other = await CouponTemplate.create(merchant_id=shop.id, name="赠品", kind="gift", gift_name="杯子")
    for n, (name, tpl, status, until) in enumerate(
        [
            ("A", template, "issued", NOW + timedelta(days=3)),
            ("B", template, "used", NOW + timedelta(days=3)),
            ("C", template, "issued", NOW - timedelta(days=1)),  # expired by date
            ("D", other, "issued", NOW + timedelta(days=3)),
        ]
    ):
        await Coupon.create(
            merchant_id=shop.id, template_id=tpl.id, member_id=m[name].id, code=f"C{n}", status=status,
            source="manual", issue_key=f"k{n}", valid_from=NOW - timedelta(days=10), valid_until=until,
        )  # fmt: skip
    ids = {member.id: name for name, member in by_name.items()}
    return World(shop, by_name, ids, store, staff, template)


@pytest.fixture
async def world(client: TestClient) -> World:
    return await build(await make_merchant())


async def create(world: World, name: str, rule: dict[str, Any]) -> tuple[Tag, recompute.Counts]:
    """An automatic tag (its computation queued), computed at NOW."""
    tag = await catalogue.create_tag(world.shop.id, name, rule, actor=ACTOR, effects=EFFECTS)
    return tag, await recompute.recompute_tag(world.shop.id, tag.id, now=NOW, timezone=TZ)


async def tagged(world: World, rule: dict[str, Any], name: str = "t") -> set[str]:
    tag, _ = await create(world, name, rule)
    rows = await MemberTag.filter(tag_id=tag.id).values_list("member_id", flat=True)
    return world.names(list(rows))  # type: ignore[arg-type]


RFM = {"type": "rfm", "window_days": 365, "recency_days": 30, "frequency": 3, "monetary_fen": 100_000}


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("重要价值客户", {"A"}),
        ("重要发展客户", {"B"}),
        ("重要保持客户", {"C"}),
        ("重要挽留客户", {"D"}),
        ("一般价值客户", {"E"}),
        ("一般发展客户", {"F"}),
        ("一般保持客户", {"G"}),
        ("一般挽留客户", {"H"}),
    ],
)
async def test_rfm_eight_segments(world: World, segment: str, expected: set[str]) -> None:
    assert await tagged(world, {**RFM, "segment": segment}, segment) == expected


async def test_the_eight_rfm_segments_partition_the_buyers_of_the_window(world: World) -> None:
    seen: list[str] = []
    for n, segment in enumerate(RFM_SEGMENTS.values()):
        seen += sorted(await tagged(world, {**RFM, "segment": segment}, f"rfm{n}"))
    assert sorted(seen) == list("ABCDEFGH")  # I bought before the window; J is erased


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"type": "tier", "tiers": ["gold"]}, {"A"}),
        ({"type": "tier", "tiers": ["normal", "silver"]}, set("BCDEFGHI")),
        ({"type": "gender", "genders": ["female"]}, {"A", "C"}),
        # A turns 36 today; C turns 60 tomorrow (59 today); E turns 18 today.
        ({"type": "age", "min_age": 36, "max_age": 59}, {"A", "C"}),
        ({"type": "age", "min_age": 18, "max_age": 18}, {"E"}),
        ({"type": "age", "max_age": 26}, {"B", "E"}),
        ({"type": "birthday_month", "months": [6]}, {"A", "C", "E"}),
        ({"type": "source", "sources": ["mini_program", "import"]}, {"F", "G"}),
        ({"type": "preference", "by": "category", "values": ["烘焙"], "window_days": 365}, {"B", "F"}),
        ({"type": "preference", "by": "category", "values": ["茶饮"], "window_days": 365}, {"A"}),
        ({"type": "preference", "by": "sku", "values": ["CAKE-1"], "window_days": 365}, {"B"}),
        ({"type": "avg_ticket", "window_days": 365, "min_fen": 40_000}, {"A", "B", "D"}),
        ({"type": "avg_ticket", "window_days": 365, "max_fen": 1_000}, {"E", "F", "G", "H"}),
        # H's last visit is the refunded purchase two days ago: a visit all the same.
        ({"type": "churn", "days": 90}, {"D", "I"}),
        ({"type": "points", "min": 100}, {"A", "B"}),
        ({"type": "points", "max": 0}, set("DEFGHI")),
        ({"type": "unused_coupon"}, {"A", "D"}),
    ],
)
async def test_each_rule_type_selects_exactly(world: World, rule: dict[str, Any], expected: set[str]) -> None:
    assert await tagged(world, rule) == expected


async def test_store_staff_and_coupon_template_rules(world: World) -> None:
    assert await tagged(world, {"type": "store", "store_ids": [world.store.id]}, "s") == {"A"}
    assert await tagged(world, {"type": "staff", "staff_ids": [world.staff.id]}, "st") == {"B"}
    coupon = {"type": "unused_coupon", "template_ids": [world.template.id]}
    assert await tagged(world, coupon, "c") == {"A"}


async def test_recompute_adds_and_removes_with_history_and_keeps_the_others(world: World) -> None:
    rule = {**RFM, "segment": "一般发展客户"}
    tag, counts = await create(world, "发展", rule)
    assert counts == {"members": 1, "added": 1, "removed": 0}
    kept = await MemberTag.get(tag_id=tag.id, member_id=world.by_name["F"].id)
    # F buys twice more (now frequent: 一般价值); H buys once (now recent: 一般发展).
    await buy(world.shop, world.by_name["F"], 0.5, 1_000)
    await buy(world.shop, world.by_name["F"], 0.25, 1_000)
    await buy(world.shop, world.by_name["H"], 0.5, 1_000)
    later = NOW + timedelta(hours=1)
    counts = await recompute.recompute_tag(world.shop.id, tag.id, now=later, timezone=TZ)
    assert counts == {"members": 1, "added": 1, "removed": 1}
    holders = await MemberTag.filter(tag_id=tag.id).values_list("member_id", flat=True)
    assert world.names(list(holders)) == {"H"}  # type: ignore[arg-type]
    history = await MemberTagHistory.filter(tag_id=tag.id).order_by("at", "member_id")
    assert [
        (h.at, world.ids[h.member_id], h.change, h.reason, h.rule_version, h.staff_id) for h in history
    ] == [
        (NOW, "F", "added", "rule", 1, None),
        (later, "F", "removed", "rule", 1, None),
        (later, "H", "added", "rule", 1, None),
    ]
    assert kept.added_at == NOW
    again = await recompute.recompute_tag(world.shop.id, tag.id, now=later, timezone=TZ)
    assert again == {"members": 1, "added": 0, "removed": 0}
    assert (await Tag.get(id=tag.id)).member_count == 1


async def test_a_rule_change_queues_the_recomputation_of_that_tag_only(world: World) -> None:
    women = await catalogue.create_tag(
        world.shop.id, "女", {"type": "gender", "genders": ["female"]}, actor=ACTOR, effects=EFFECTS
    )
    gold = await catalogue.create_tag(
        world.shop.id, "金", {"type": "tier", "tiers": ["gold"]}, actor=ACTOR, effects=EFFECTS
    )
    assert await queued_tags() == [women.id, gold.id]
    await EFFECTS.run_due(datetime.now(UTC))  # the creations' computations
    assert await queued_tags() == []
    computed = (await Tag.get(id=women.id)).recomputed_at
    assert computed is not None and (await Tag.get(id=women.id)).member_count == 2
    await Member.filter(id=world.by_name["D"].id).update(gender="female")  # women's tag is now stale
    tag = await catalogue.update_tag(
        world.shop.id, gold.id, name=None, rule={"type": "tier", "tiers": ["gold", "silver"]},
        actor=ACTOR, effects=EFFECTS,
    )  # fmt: skip
    assert tag.rule_version == 2
    assert await queued_tags() == [gold.id]
    await EFFECTS.run_due(datetime.now(UTC))
    assert (await Tag.get(id=gold.id)).member_count == 2
    history = await MemberTagHistory.filter(tag_id=gold.id, member_id=world.by_name["B"].id).get()
    assert history.rule_version == 2
    untouched = await Tag.get(id=women.id)
    assert untouched.recomputed_at == computed and untouched.member_count == 2
    holders = await MemberTag.filter(tag_id=women.id).values_list("member_id", flat=True)
    assert world.names(list(holders)) == {"A", "C"}  # type: ignore[arg-type]
    # A rename queues nothing; the nightly run catches the stale tag up.
    await catalogue.update_tag(world.shop.id, gold.id, name="金卡", rule=None, actor=ACTOR, effects=EFFECTS)
    assert await queued_tags() == []
    total = await recompute.nightly(datetime.now(UTC) + timedelta(days=1))
    assert total == {"tags": 2, "added": 1, "removed": 0}
    holders = await MemberTag.filter(tag_id=women.id).values_list("member_id", flat=True)
    assert world.names(list(holders)) == {"A", "C", "D"}  # type: ignore[arg-type]


async def queued_tags() -> list[int]:
    rows = await Task.filter(kind=recompute.TAG_RECOMPUTE, status=TaskStatus.PENDING).order_by("id")
    return [row.payload["tag_id"] for row in rows]


async def test_concurrent_recomputations_of_one_tag_take_turns(world: World) -> None:
    tag = await catalogue.create_tag(
        world.shop.id, "并发", {"type": "gender", "genders": ["female"]}, actor=ACTOR, effects=EFFECTS
    )
    runs = await asyncio.gather(
        *(recompute.recompute_tag(world.shop.id, tag.id, now=NOW, timezone=TZ) for _ in range(4))
    )
    assert sorted(run["added"] for run in runs) == [0, 0, 0, 2]
    assert await MemberTagHistory.filter(tag_id=tag.id).count() == 2
    assert (await Tag.get(id=tag.id)).member_count == 2


async def test_concurrent_manual_applies_change_once(world: World) -> None:
    tag = await Tag.create(merchant_id=world.shop.id, name="手动并发")
    member = world.by_name["A"]
    staff_id = world.staff.id
    changed = await asyncio.gather(
        *(
            assign.change_one(world.shop.id, tag.id, member.id, "add", staff_id=staff_id, now=NOW)
            for _ in range(5)
        )
    )
    assert sorted(changed) == [False, False, False, False, True]
    assert await MemberTagHistory.filter(tag_id=tag.id).count() == 1
    assert (await Tag.get(id=tag.id)).member_count == 1
