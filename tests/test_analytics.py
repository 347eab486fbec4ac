"""The back office's analyses on PostgreSQL, over a small shop whose every figure is worked out by hand.

The shop (Asia/Shanghai): stores 总店 (main) and 东区店 (east); cashiers alice (main) and bob (east).

| member | registered (local)  | source       | store | staff | gender | born       | tier   |
| A      | 2025-03-10 10:00    | oa_subscribe | main  |       | female | 1990-06-15 | silver |
| B      | 2026-11-02 09:00    | oa_staff     | main  | alice | male   | 2000-01-01 |        |
| C      | 2026-11-02 23:30    | oa_staff     | main  | alice |        |            |        |
| D      | 2026-11-03 00:30    | mini_program | east  |       | female | 2015-01-01 |        |
| E      | 2026-11-10 12:00    | oa_staff     | east  | bob   | undisc.|            |        |
| F      | 2026-10-31 12:00    | import       | main  |       |        |            |        |

C registers at 15:30 UTC on Nov 2 and D at 16:30 UTC on Nov 2, which is Nov 3 in Shanghai.

Purchases (local noon unless said): P1 A 2025-05-01 main/alice 2×T1(茶 10.00, cost 4.00);
P2 A 2025-05-11 main/alice 1×T1 + 1×K1(咖啡 30.00, no cost), discount 5.00; P3 A 2025-05-31 main/alice
2×K1; P4 B 2026-11-05 10:00 east/bob 3×T1; P5 B 2026-11-06 east/bob 1×B1(面包 15.00, cost 5.00),
refunded; P6 D 2026-11-10 10:00 east/bob 3×B1, discount 3.00.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook

from handlers.analytics import refresh
from handlers.core import queries
from handlers.staff.accounts import create_staff
from models.loyalty import AuditLog
from models.mall import MallItem
from models.merchant import Merchant, Store
from models.points import PointsPool
from models.staff import Staff
from tests.support import dbutil
from tests.support.factories import make_merchant, staff_headers
from webhooks.admin_analytics import ANALYSES

ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(UTC)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


class Shop:
    merchant: Merchant
    main: Store
    east: Store
    alice: Staff
    bob: Staff
    members: dict[str, int]
    purchases: dict[str, int]
    admin: dict[str, str]
    manager: dict[str, str]


_MEMBER_SQL = """
INSERT INTO member (merchant_id, code, subscribed, gender, birthday, registered_at, source, acquired_by_id,
                    store_id, blocked_reason, lifetime_spend_fen)
VALUES (:merchant, :code, true, :gender, :birthday, :at, :source, :staff, :store, '', 0) RETURNING id
"""
_PURCHASE_SQL = """
INSERT INTO purchase (merchant_id, member_id, store_id, staff_id, idempotency_key, request_digest,
                      amount_fen, discount_fen, offset_points, offset_fen, paid_fen, points_earned,
                      points_pending, tier_code, period_spend_fen, points_today_before, breakdown, items,
                      status, created_at)
VALUES (:merchant, :member, :store, :staff, :key, 'x', :amount, :discount, 0, 0, :paid, 0, false, 'normal',
        0, 0, '[]'::jsonb, :items::jsonb, 'completed', :at) RETURNING id
"""
_POINTS_SQL = """
INSERT INTO points_transaction (merchant_id, member_id, delta, kind, idempotency_key, reference,
                                balance_after, actor, reason, created_at)
VALUES (:merchant, :member, :delta, :kind, :key, '', 0, 'system', '', :at)
"""
T1 = {"sku": "T1", "category": "茶", "unit_price_fen": 1000, "unit_cost_fen": 400}
K1 = {"sku": "K1", "category": "咖啡", "unit_price_fen": 3000, "unit_cost_fen": None}
B1 = {"sku": "B1", "category": "面包", "unit_price_fen": 1500, "unit_cost_fen": 500}


async def _member(shop: Shop, code: str, at: str, source: str, store: Store, staff: Staff | None = None,
                  gender: str | None = None, birthday: date | None = None) -> int:  # fmt: skip
    row = await queries.fetch_one(
        _MEMBER_SQL, merchant=shop.merchant.id, code=code, gender=gender, birthday=birthday, at=local(at),
        source=source, staff=staff.id if staff else None, store=store.id,
    )  # fmt: skip
    return int(row["id"])


async def _purchase(shop: Shop, key: str, member: str, at: str, store: Store, staff: Staff,
                    lines: list[tuple[dict[str, Any], int]], discount: int = 0) -> int:  # fmt: skip
    items = [{**item, "qty": qty} for item, qty in lines]
    amount = sum(item["unit_price_fen"] * qty for item, qty in lines)
    row = await queries.fetch_one(
        _PURCHASE_SQL, merchant=shop.merchant.id, member=shop.members[member], store=store.id, staff=staff.id,
        key=key, amount=amount, discount=discount, paid=amount - discount, items=json.dumps(items),
        at=local(at),
    )  # fmt: skip
    return int(row["id"])


async def _points(shop: Shop, member: str, kind: str, delta: int, at: str) -> None:
    key = f"{member}:{kind}:{at}"
    await queries.fetch_rows(
        _POINTS_SQL, merchant=shop.merchant.id, member=shop.members[member], delta=delta, kind=kind, key=key,
        at=local(at),
    )  # fmt: skip


@pytest.fixture
async def shop(client: TestClient) -> Shop:
    s = Shop()
    s.merchant = await make_merchant()
    s.main = await Store.get(merchant_id=s.merchant.id, code="main")
    s.east = await Store.create(merchant=s.merchant, code="east", name="东区店")
    s.alice = await create_staff(
        s.merchant, store_code="main", username="alice", role="cashier", password="pw-alice-123"
    )
    s.bob = await create_staff(
        s.merchant, store_code="east", username="bob", role="cashier", password="pw-bob-1234"
    )
    s.members = {
        "A": await _member(
            s, "A", "2025-03-10 10:00", "oa_subscribe", s.main, None, "female", date(1990, 6, 15)
        ),
        "B": await _member(s, "B", "2026-11-02 09:00", "oa_staff", s.main, s.alice, "male", date(2000, 1, 1)),
        "C": await _member(s, "C", "2026-11-02 23:30", "oa_staff", s.main, s.alice),
        "D": await _member(
            s, "D", "2026-11-03 00:30", "mini_program", s.east, None, "female", date(2015, 1, 1)
        ),
        "E": await _member(s, "E", "2026-11-10 12:00", "oa_staff", s.east, s.bob, "undisclosed"),
        "F": await _member(s, "F", "2026-10-31 12:00", "import", s.main),
    }
    await queries.fetch_rows(
        "INSERT INTO member_tier (merchant_id, member_id, tier_code, since)"
        " VALUES (:merchant, :member, 'silver', :at)",
        merchant=s.merchant.id, member=s.members["A"], at=local("2025-06-01 00:00"),
    )  # fmt: skip
    s.purchases = {
        "P1": await _purchase(s, "P1", "A", "2025-05-01 12:00", s.main, s.alice, [(T1, 2)]),
        "P2": await _purchase(s, "P2", "A", "2025-05-11 12:00", s.main, s.alice, [(T1, 1), (K1, 1)], 500),
        "P3": await _purchase(s, "P3", "A", "2025-05-31 12:00", s.main, s.alice, [(K1, 2)]),
        "P4": await _purchase(s, "P4", "B", "2026-11-05 10:00", s.east, s.bob, [(T1, 3)]),
        "P5": await _purchase(s, "P5", "B", "2026-11-06 12:00", s.east, s.bob, [(B1, 1)]),
        "P6": await _purchase(s, "P6", "D", "2026-11-10 10:00", s.east, s.bob, [(B1, 3)], 300),
    }
    for member, kind, delta, at in (
        ("A", "earn_purchase", 20, "2025-05-01 12:00"),
        ("A", "earn_purchase", 35, "2025-05-11 12:00"),
        ("A", "earn_purchase", 60, "2025-05-31 12:00"),
        ("A", "spend_redemption", -50, "2025-06-01 12:00"),
        ("A", "expire", -30, "2026-05-31 12:00"),
        ("B", "earn_registration", 100, "2026-11-02 09:00"),
        ("B", "earn_purchase", 30, "2026-11-05 10:00"),
        ("D", "earn_purchase", 42, "2026-11-10 10:00"),
        ("D", "spend_offset", -20, "2026-11-10 10:00"),
    ):
        await _points(s, member, kind, delta, at)
    assert await refresh.refresh() == {"rolled_up": 6 + 6 + 9}
    # P5 is refunded after it was rolled up: the refund takes it back out.
    await queries.fetch_rows("UPDATE purchase SET status = 'refunded' WHERE id = :id", id=s.purchases["P5"])
    assert await refresh.refresh() == {"rolled_up": 1}
    await PointsPool.create(merchant=s.merchant, code="spring", budget=1000, granted=250)
    await queries.fetch_rows(
        "INSERT INTO referral_award (merchant_id, referee_id, referrer_id, level, points, created_at)"
        " VALUES (:merchant, :b, :a, 1, 50, :at)",
        merchant=s.merchant.id, a=s.members["A"], b=s.members["B"], at=local("2026-11-03 12:00"),
    )  # fmt: skip
    s.admin = await staff_headers(client, s.merchant, "admin")
    s.manager = await staff_headers(client, s.merchant, "manager")  # of the main store
    return s


async def get(client: TestClient, headers: dict[str, str], path: str, **query: Any) -> dict[str, Any]:
    response = await client.get(f"/api/admin/analytics/{path}?{urlencode(query)}", headers=headers)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def pick(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in keys) for row in rows]


NOV = {"date_from": "2026-11-01", "date_to": "2026-11-10"}
ALL = {"date_from": "2025-03-01", "date_to": "2026-11-30"}


# Members -------------------------------------------------------------------------------------------


async def test_new_members_per_local_day_week_and_month_and_by_source(client: TestClient, shop: Shop) -> None:
    days = await get(client, shop.admin, "members/new", **NOV)
    assert [row["period"] for row in days["rows"]] == [f"2026-11-{d:02d}" for d in range(1, 11)]
    assert pick(days["rows"], "period", "total", "oa_subscribe", "oa_staff", "mini_program") == [
        ("2026-11-01", 0, 0, 0, 0), ("2026-11-02", 2, 0, 2, 0), ("2026-11-03", 1, 0, 0, 1),
        *[(f"2026-11-{d:02d}", 0, 0, 0, 0) for d in range(4, 10)], ("2026-11-10", 1, 0, 1, 0),
    ]  # fmt: skip
    assert days["summary"]["total"] == 4 and days["summary"]["oa_staff"] == 3
    weeks = await get(client, shop.admin, "members/new", grain="week", **NOV)
    assert pick(weeks["rows"], "period", "total") == [("2026-10-26", 0), ("2026-11-02", 3), ("2026-11-09", 1)]
    months = await get(client, shop.admin, "members/new", grain="month", **ALL)
    assert len(months["rows"]) == 21
    assert pick(months["rows"], "period", "total", "import")[0] == ("2025-03", 1, 0)
    assert pick(months["rows"], "period", "total", "import")[-2:] == [("2026-10", 1, 1), ("2026-11", 4, 0)]
    east = await get(client, shop.admin, "members/new", store_id=shop.east.id, **NOV)
    assert east["summary"]["total"] == 2


async def test_a_manager_sees_their_own_store_and_may_not_name_another(
    client: TestClient, shop: Shop
) -> None:
    mine = await get(client, shop.manager, "members/new", **NOV)
    assert mine["summary"]["total"] == 2  # B and C, of the main store
    response = await client.get(
        f"/api/admin/analytics/members/new?store_id={shop.east.id}", headers=shop.manager
    )
    assert response.status == 403
    assert (await response.json())["error"]["field"] == "store_id"
    cashier = await staff_headers(client, shop.merchant, "cashier", "till-1")
    assert (await client.get("/api/admin/analytics/members/new", headers=cashier)).status == 403


async def test_members_by_acquiring_staff(client: TestClient, shop: Shop) -> None:
    ranked = await get(client, shop.admin, "members/staff", **NOV)
    assert pick(ranked["rows"], "rank", "username", "store", "members") == [
        (1, "alice", "总店", 2),
        (2, "bob", "东区店", 1),
    ]


TIERS_ALL = [
    ("normal", "普通会员", 5, 0.8333, 7200),
    ("silver", "银卡", 1, 0.1667, 11500),
    ("gold", "金卡", 0, 0.0, 0),
    ("diamond", "钻石", 0, 0.0, 0),
]
TIER_COLUMNS = ("tier_code", "tier_name", "members", "share", "spend_fen")
MIXED = {"date_from": "2025-03-05", "date_to": "2026-11-30"}  # partial March 2025, whole months to Nov 2026


async def test_tier_distribution(client: TestClient, shop: Shop) -> None:
    everyone = await get(client, shop.admin, "members/tiers")
    assert pick(everyone["rows"], *TIER_COLUMNS) == TIERS_ALL
    november = await get(client, shop.admin, "members/tiers", **NOV)
    assert november["summary"]["members"] == 4
    main = await get(client, shop.admin, "members/tiers", store_id=shop.main.id)
    assert pick(main["rows"], "tier_code", "members")[:2] == [("normal", 3), ("silver", 1)]


async def test_tiers_and_ages_from_the_snapshot_and_the_edge_days_are_the_same(
    client: TestClient, shop: Shop
) -> None:
    queries_ = [{}, NOV, ALL, MIXED, {"store_id": shop.east.id}, {"date_from": "2026-10-31"}]
    direct = [await get(client, shop.admin, "members/tiers", **q) for q in queries_]
    ages = [await get(client, shop.admin, "members/gender-age", **q) for q in queries_]
    assert await refresh.snapshots(NOW) == {"merchants": 1, "cells": 6}  # one cell per member here
    for query, before, age in zip(queries_, direct, ages, strict=True):
        after = await get(client, shop.admin, "members/tiers", **query)
        assert after["rows"] == before["rows"], query
        assert after["summary"]["snapshot_at"] is not None
        assert (await get(client, shop.admin, "members/gender-age", **query))["rows"] == age["rows"], query
    # A member who joins after the snapshot counts in whole months at the next one (ten minutes).
    await _member(shop, "G", "2026-11-20 12:00", "oa_subscribe", shop.main)
    stale = await get(client, shop.admin, "members/tiers", **ALL)
    assert stale["summary"]["members"] == 6
    edge = await get(client, shop.admin, "members/tiers", date_from="2026-11-15", date_to="2026-11-20")
    assert edge["summary"]["members"] == 1  # a partial month is read from the members themselves
    await refresh.snapshots(NOW)
    assert (await get(client, shop.admin, "members/tiers", **ALL))["summary"]["members"] == 7


async def test_regions_from_the_shipping_address_else_the_store(client: TestClient, shop: Shop) -> None:
    item = await MallItem.create(
        merchant=shop.merchant, kind="shipped", name="保温杯", price_points=100, stock=5
    )
    await queries.fetch_rows(
        "INSERT INTO mall_order (merchant_id, member_id, item_id, qty, points, cash_fen, status,"
        " idempotency_key, address, local_day, created_at)"
        " VALUES (:merchant, :member, :item, 1, 100, 0, 'to_ship', 'o1', :address::jsonb, '2026-11-09', :at)",
        merchant=shop.merchant.id, member=shop.members["A"], item=item.id, at=local("2026-11-09 10:00"),
        address=json.dumps({"name": "甲", "phone": "13800000001", "region": "广东省 深圳市 南山区",
                            "detail": "1号"}),
    )  # fmt: skip
    report = await get(client, shop.admin, "members/regions")
    assert pick(report["rows"], "region", "basis", "members") == [
        ("总店", "所属门店", 3),
        ("东区店", "所属门店", 2),
        ("广东省", "收货地址", 1),
    ]
    ranges = [{}, NOV, ALL, MIXED, {"store_id": shop.main.id}]
    direct = [await get(client, shop.admin, "members/regions", **q) for q in ranges]
    await refresh.snapshots(NOW)  # whole registration months now come from the region snapshot
    for query, before in zip(ranges, direct, strict=True):
        after = await get(client, shop.admin, "members/regions", **query)
        assert after["rows"] == before["rows"] and "snapshot_at" in after["summary"], query


async def test_referral_ranking_reuses_the_loyalty_ranking(client: TestClient, shop: Shop) -> None:
    await queries.fetch_rows(
        "INSERT INTO referral_award (merchant_id, referee_id, referrer_id, level, points, created_at)"
        " VALUES (:merchant, :c, :a, 1, 50, :late)",
        merchant=shop.merchant.id, a=shop.members["A"], c=shop.members["C"], late=local("2026-11-20 12:00"),
    )  # fmt: skip
    report = await get(client, shop.admin, "members/referrals", **NOV)
    assert pick(report["rows"], "rank", "member_code", "referrals", "points") == [(1, "A", 1, 50)]
    east = await get(client, shop.admin, "members/referrals", store_id=shop.east.id, **NOV)
    assert east["rows"] == []  # A was acquired by the main store


async def test_churn_warning_by_tier_with_last_visit_and_spend(client: TestClient, shop: Shop) -> None:
    report = await get(client, shop.admin, "members/churn", days=90)
    assert pick(report["rows"], "member_code", "tier_name", "lifetime_spend_fen") == [("A", "银卡", 11500)]
    assert report["rows"][0]["last_visit_at"].startswith("2025-05-31T04:00:00")
    assert report["summary"]["members"] == 1
    assert report["summary"]["by_tier"] == [
        {"tier_code": "silver", "tier_name": "银卡", "members": 1, "spend_fen": 11500}
    ]
    # Nobody has visited today.
    recent = await get(client, shop.admin, "members/churn", days=1)
    assert recent["summary"]["members"] == 6
    await refresh.snapshots(NOW)  # the counts of every member now come from the visit snapshot
    for days in (1, 90, 400, 600):
        direct = await get(client, shop.admin, "members/churn", days=days, **ALL)
        snapshot = await get(client, shop.admin, "members/churn", days=days)
        assert "snapshot_at" in snapshot["summary"]
        assert snapshot["summary"]["by_tier"] == direct["summary"]["by_tier"], days
        assert snapshot["rows"] == direct["rows"], days
    east = await get(client, shop.admin, "members/churn", days=1, store_id=shop.east.id)
    assert east["summary"]["by_tier"] == [
        {"tier_code": "normal", "tier_name": "普通会员", "members": 2, "spend_fen": 4200}
    ]


async def test_consumption_cycle_warning(client: TestClient, shop: Shop) -> None:
    # A's last purchase (2025) is longer ago than the default 180 days: churn's, not the cycle's.
    assert (await get(client, shop.admin, "members/cycle", overdue_pct=50))["summary"]["members"] == 0
    report = await get(client, shop.admin, "members/cycle", overdue_pct=50, within_days=3650)
    assert pick(report["rows"], "member_code", "purchases", "median_days", "spend_fen") == [
        ("A", 3, 15.0, 11500)
    ]
    assert report["summary"] == {"overdue_pct": 50, "within_days": 3650, "members": 1}
    ranged = await get(client, shop.admin, "members/cycle", within_days=3650, **ALL)
    assert ranged["summary"]["members"] == 1
    await queries.fetch_rows("UPDATE member SET anonymized_at = now() WHERE id = :id", id=shop.members["A"])
    for query in ({}, ALL):  # an erased member is no longer warned about
        gone = await get(client, shop.admin, "members/cycle", within_days=3650, **query)
        assert (gone["summary"]["members"], gone["rows"]) == (0, []), query
    east = await get(client, shop.admin, "members/cycle", store_id=shop.east.id)
    assert east["summary"]["members"] == 0


async def test_cohorts_lifetime_value_and_repeat_rate(client: TestClient, shop: Shop) -> None:
    report = await get(client, shop.admin, "members/cohorts", **ALL)
    cohorts = {row["cohort"]: row for row in report["rows"]}
    assert len(report["rows"]) == 21
    march = cohorts["2025-03"]
    assert (march["members"], march["buyers"], march["repeaters"], march["repeat_rate"]) == (1, 1, 1, 1.0)
    assert (march["spend_fen"], march["ltv_fen"]) == (11500, 11500)
    november = cohorts["2026-11"]
    assert (november["members"], november["buyers"], november["repeaters"]) == (4, 2, 0)
    assert (november["buyer_rate"], november["repeat_rate"], november["spend_fen"], november["ltv_fen"]) == (
        0.5, 0.0, 7200, 1800,
    )  # fmt: skip
    october = cohorts["2026-10"]
    assert (october["members"], october["buyers"], october["buyer_rate"]) == (1, 0, 0.0)


# Sales ---------------------------------------------------------------------------------------------


async def test_sales_by_category_with_cost_and_profit(client: TestClient, shop: Shop) -> None:
    november = await get(client, shop.admin, "sales/categories", **NOV)
    assert pick(november["rows"], "category", "qty", "revenue_fen", "cost_fen", "profit_fen", "margin") == [
        ("面包", 3, 4500, 1500, 3000, 0.6667),
        ("茶", 3, 3000, 1200, 1800, 0.6),
    ]
    may = await get(client, shop.admin, "sales/categories", date_from="2025-05-01", date_to="2025-05-31")
    assert pick(
        may["rows"], "category", "qty", "revenue_fen", "profit_fen", "margin", "uncosted_revenue_fen"
    ) == [
        ("咖啡", 3, 9000, 0, None, 9000),
        ("茶", 3, 3000, 1800, 0.6, 0),
    ]
    assert may["summary"]["revenue_fen"] == 12000 and may["summary"]["margin"] == 0.6
    main = await get(client, shop.admin, "sales/categories", store_id=shop.main.id, **NOV)
    assert main["rows"] == []
    edges = await get(client, shop.admin, "sales/categories", date_from="2025-05-05", date_to="2026-11-07")
    assert pick(edges["rows"], "category", "qty", "revenue_fen", "cost_fen", "profit_fen") == [
        ("咖啡", 3, 9000, 0, 0),
        ("茶", 4, 4000, 1600, 2400),
    ]


async def test_sales_trend_per_day_and_month(client: TestClient, shop: Shop) -> None:
    days = await get(client, shop.admin, "sales/trend", **NOV)
    busy = [row for row in days["rows"] if row["purchases"]]
    assert pick(
        busy, "period", "purchases", "amount_fen", "discount_fen", "paid_fen", "average_fen", "profit_fen"
    ) == [
        ("2026-11-05", 1, 3000, 0, 3000, 3000, 1800),
        ("2026-11-10", 1, 4500, 300, 4200, 4200, 3000),
    ]
    assert days["summary"]["paid_fen"] == 7200 and days["summary"]["purchases"] == 2
    months = await get(
        client, shop.admin, "sales/trend", grain="month", date_from="2025-05-01", date_to="2026-11-30"
    )
    assert len(months["rows"]) == 19
    assert pick(months["rows"][:2], "period", "purchases", "amount_fen", "discount_fen", "paid_fen") == [
        ("2025-05", 3, 12000, 500, 11500),
        ("2025-06", 0, 0, 0, 0),
    ]
    edges = await get(
        client, shop.admin, "sales/trend", grain="month", date_from="2025-05-05", date_to="2026-11-07"
    )
    busy = [row for row in edges["rows"] if row["purchases"]]
    assert pick(busy, "period", "purchases", "paid_fen", "cost_fen", "profit_fen") == [
        ("2025-05", 2, 9500, 400, 600),
        ("2026-11", 1, 3000, 1200, 1800),
    ]
    quarters = await get(client, shop.admin, "sales/trend", grain="quarter", **ALL)
    assert pick(quarters["rows"], "period", "purchases")[:2] == [("2025-Q1", 0), ("2025-Q2", 3)]
    years = await get(client, shop.admin, "sales/trend", grain="year", **ALL)
    assert pick(years["rows"], "period", "purchases", "paid_fen") == [("2025", 3, 11500), ("2026", 2, 7200)]


async def test_staff_sales_ranking(client: TestClient, shop: Shop) -> None:
    ranked = await get(client, shop.admin, "sales/staff", **ALL)
    assert pick(ranked["rows"], "rank", "username", "store", "purchases", "paid_fen", "average_fen") == [
        (1, "alice", "总店", 3, 11500, 3833),
        (2, "bob", "东区店", 2, 7200, 3600),
    ]


async def test_product_ranking_joins_whole_months_and_edge_days(client: TestClient, shop: Shop) -> None:
    whole = await get(client, shop.admin, "sales/products", date_from="2025-05-01", date_to="2026-11-30")
    assert pick(whole["rows"], "rank", "sku", "qty", "revenue_fen", "profit_fen") == [
        (1, "K1", 3, 9000, 0),
        (2, "T1", 6, 6000, 3600),
        (3, "B1", 3, 4500, 3000),
    ]
    edges = await get(client, shop.admin, "sales/products", date_from="2025-05-05", date_to="2026-11-07")
    assert pick(edges["rows"], "sku", "qty", "revenue_fen") == [("K1", 3, 9000), ("T1", 4, 4000)]
    by_qty = await get(
        client, shop.admin, "sales/products", sort="qty", date_from="2025-05-01", date_to="2026-11-30"
    )
    assert [row["sku"] for row in by_qty["rows"]] == ["T1", "B1", "K1"]


async def test_stock_ranking_flags_low_stock_and_the_threshold_is_set_and_audited(
    client: TestClient, shop: Shop
) -> None:
    cup = await MallItem.create(
        merchant=shop.merchant, kind="shipped", name="保温杯", price_points=100, stock=5
    )
    pen = await MallItem.create(merchant=shop.merchant, kind="pickup", name="钢笔", price_points=50, stock=3)
    bag = await MallItem.create(
        merchant=shop.merchant, kind="pickup", name="帆布袋", price_points=80, stock=50
    )
    for item, threshold in ((cup, 10), (bag, 20)):
        response = await client.put(
            f"/api/admin/mall/items/{item.id}/low-stock", json={"threshold": threshold}, headers=shop.manager
        )
        assert response.status == 200, await response.text()
    assert await response.json() == {"item_id": bag.id, "stock": 50, "low_stock_threshold": 20, "low": False}
    logged = await AuditLog.filter(action="mall.item.low_stock").order_by("id")
    assert [(row.subject, row.detail) for row in logged] == [
        (str(cup.id), {"threshold": 10, "previous": None}),
        (str(bag.id), {"threshold": 20, "previous": None}),
    ]
    await queries.fetch_rows(
        "INSERT INTO mall_order (merchant_id, member_id, item_id, qty, points, cash_fen, status,"
        " idempotency_key, local_day, created_at, store_id)"
        " VALUES (:merchant, :member, :item, 2, 100, 0, 'fulfilled', 'o2', '2026-11-05', :at, :store)",
        merchant=shop.merchant.id, member=shop.members["B"], item=cup.id, at=local("2026-11-05 10:00"),
        store=shop.main.id,
    )  # fmt: skip
    report = await get(client, shop.admin, "sales/stock", **NOV)
    assert pick(report["rows"], "name", "stock", "low_stock_threshold", "low", "redeemed", "days_left") == [
        ("保温杯", 5, 10, True, 2, 25.0),
        ("钢笔", 3, None, False, 0, None),
        ("帆布袋", 50, 20, False, 0, None),
    ]
    assert report["summary"]["low"] == 1
    east = await get(client, shop.admin, "sales/stock", store_id=shop.east.id, **NOV)
    assert [row["redeemed"] for row in east["rows"]] == [0, 0, 0]
    gone = await client.put(
        f"/api/admin/mall/items/{pen.id + 99}/low-stock", json={"threshold": 1}, headers=shop.admin
    )
    assert gone.status == 404


async def test_delivery_reminders_for_shipped_orders(client: TestClient, shop: Shop) -> None:
    cup = await MallItem.create(
        merchant=shop.merchant, kind="shipped", name="保温杯", price_points=100, stock=5
    )
    shipment = {
        "carrier": "顺丰",
        "tracking_no": "SF1",
        "shipped_at": "2026-11-20T02:00:00+00:00",
        "shipped_by": "bob",
    }
    for key, status, at, address in (
        ("s1", "to_ship", "2026-11-09 10:00", {"region": "广东省"}),
        ("s2", "shipped", "2026-11-08 10:00", {"region": "广东省", "shipment": shipment}),
        ("s3", "fulfilled", "2026-11-07 10:00", {"region": "广东省"}),
    ):
        await queries.fetch_rows(
            "INSERT INTO mall_order (merchant_id, member_id, item_id, qty, points, cash_fen, status,"
            " idempotency_key, address, local_day, created_at) VALUES (:merchant, :member, :item, 1, 100, 0,"
            " :status, :key, :address::jsonb, '2026-11-09', :at)",
            merchant=shop.merchant.id, member=shop.members["B"], item=cup.id, status=status, key=key,
            address=json.dumps(address), at=local(at),
        )  # fmt: skip
    report = await get(client, shop.admin, "sales/deliveries", ship_days=2, deliver_days=7)
    assert pick(report["rows"], "status", "task", "due_at", "overdue", "staff", "tracking_no") == [
        ("待发货", "发货", "2026-11-11T02:00:00Z", True, "", ""),
        ("已发货", "确认送达", "2026-11-27T02:00:00Z", True, "bob", "SF1"),
    ]
    assert report["summary"] == {"open": 2, "overdue": 2}


# Points --------------------------------------------------------------------------------------------


async def test_points_issued_redeemed_expired_per_period(client: TestClient, shop: Shop) -> None:
    months = await get(client, shop.admin, "points/periods", grain="month", **ALL)
    busy = [row for row in months["rows"] if any(row[k] for k in ("issued", "redeemed", "expired"))]
    assert pick(busy, "period", "issued", "redeemed", "expired", "net") == [
        ("2025-05", 115, 0, 0, 115),
        ("2025-06", 0, 50, 0, -50),
        ("2026-05", 0, 0, 30, -30),
        ("2026-11", 172, 20, 0, 152),
    ]
    assert (months["summary"]["issued"], months["summary"]["net"]) == (287, 187)


async def test_points_by_source(client: TestClient, shop: Shop) -> None:
    report = await get(client, shop.admin, "points/sources", **ALL)
    assert pick(report["rows"], "kind", "source", "points_in", "points_out") == [
        ("earn_purchase", "消费积分", 187, 0),
        ("earn_registration", "注册积分", 100, 0),
        ("expire", "过期", 0, 30),
        ("spend_offset", "消费抵扣", 0, 20),
        ("spend_redemption", "商城兑换", 0, 50),
    ]


async def test_points_liability_rates_and_pools(client: TestClient, shop: Shop) -> None:
    report = await get(client, shop.admin, "points/liability", **ALL)
    summary = report["summary"]
    assert (summary["issued"], summary["redeemed"], summary["expired"]) == (287, 70, 30)
    assert (summary["redemption_rate"], summary["breakage_rate"]) == (0.2439, 0.1045)
    assert (summary["outstanding_points"], summary["points_per_yuan"], summary["outstanding_fen"]) == (
        187,
        100,
        187,
    )
    assert report["rows"] == [
        {"pool": "spring", "budget": 1000, "granted": 250, "left": 750, "used_rate": 0.25}
    ]
    # The balance at the end of a range counts every posting up to that day, before the range too.
    east = await get(client, shop.admin, "points/liability", store_id=shop.east.id, **NOV)
    assert (east["summary"]["issued"], east["summary"]["outstanding_points"]) == (42, 22)
    may = await get(client, shop.admin, "points/liability", date_from="2025-05-01", date_to="2025-05-31")
    assert may["summary"]["outstanding_points"] == 115


# Exports, freshness, the read connection ----------------------------------------------------------


async def test_csv_export_is_the_report_in_yuan_and_is_audited(client: TestClient, shop: Shop) -> None:
    response = await client.get(
        f"/api/admin/analytics/sales/categories/export?{urlencode(NOV)}", headers=shop.admin
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="sales_categories-')
    text = (await response.read()).decode("utf-8-sig")
    assert list(csv.reader(io.StringIO(text))) == [
        ["品类", "销量", "销售额（元）", "成本（元）", "毛利（元）", "毛利率", "无成本销售额（元）"],
        ["面包", "3", "45.00", "15.00", "30.00", "0.6667", "0.00"],
        ["茶", "3", "30.00", "12.00", "18.00", "0.6", "0.00"],
    ]
    logged = await AuditLog.get(action="analytics.export")
    assert logged.subject == "sales/categories"
    assert logged.detail == {"format": "csv", "query": NOV, "store_id": None}


async def test_xlsx_export_with_local_times(client: TestClient, shop: Shop) -> None:
    response = await client.get(
        "/api/admin/analytics/members/churn/export?format=xlsx&days=90", headers=shop.admin
    )
    assert response.status == 200, await response.text()
    sheet = load_workbook(io.BytesIO(await response.read()), read_only=True).worksheets[0]
    assert sheet.title == "流失预警"
    assert [list(row) for row in sheet.iter_rows(values_only=True)] == [
        ["会员号", "姓名", "等级", "最近到店", "未到店天数", "累计消费（元）"],
        ["A", None, "银卡", "2025-05-31 12:00", (NOW - local("2025-05-31 12:00")).days, 115],
    ]


async def test_a_till_purchase_and_its_refund_reach_the_rollups_at_the_next_refresh(
    client: TestClient, shop: Shop
) -> None:
    from handlers.rules.earn_model import Item
    from handlers.till.purchase import PurchaseRequest, record_purchase
    from handlers.till.refund import refund_purchase
    from tests.support.factories import EFFECTS

    at = datetime.now(UTC)
    request = PurchaseRequest("till-1", shop.members["E"], 2000, items=(Item("T1", "茶", 2, 1000),),
                              item_costs={"T1": 400})  # fmt: skip
    result = await record_purchase(shop.merchant, shop.bob, request, now=at, effects=EFFECTS)
    made = await queries.fetch_one("SELECT created_at FROM purchase WHERE id = :id", id=result.purchase_id)
    day = made["created_at"].astimezone(ZONE).date().isoformat()  # the till stamps the database's clock
    before = await get(client, shop.admin, "sales/trend", date_from=day, date_to=day)
    assert before["summary"]["purchases"] == 0  # queued, not rolled up yet
    assert await refresh.refresh() == {"rolled_up": 2}  # the purchase and its points posting
    after = await get(client, shop.admin, "sales/trend", date_from=day, date_to=day)
    assert (after["summary"]["purchases"], after["summary"]["paid_fen"], after["summary"]["profit_fen"]) == (
        1, 2000, 1200,
    )  # fmt: skip
    east = await get(client, shop.admin, "members/cohorts", store_id=shop.east.id, **NOV)
    assert pick(east["rows"], "cohort", "members", "buyers", "spend_fen") == [("2026-11", 2, 2, 4200 + 2000)]
    await refund_purchase(shop.merchant, None, result.purchase_id, key="r-1", now=at, effects=EFFECTS)
    assert await refresh.refresh() == {"rolled_up": 2}  # the refund and its claw-back
    refunded = await get(client, shop.admin, "sales/trend", date_from=day, date_to=day)
    assert (refunded["summary"]["purchases"], refunded["summary"]["paid_fen"]) == (0, 0)
    points = await get(client, shop.admin, "points/sources", date_from=day, date_to=day)
    assert pick(points["rows"], "kind", "points_in", "points_out") == [
        ("earn_purchase", 20, 0),
        ("reverse", 0, 20),
    ]


_ROLLUPS = ("sales_day", "sales_day_category", "sales_month_category", "sales_day_product",
            "sales_month_product", "member_day", "points_day", "member_stats", "member_cohort")  # fmt: skip


async def _rollups(shop: Shop) -> dict[str, list[str]]:
    out = {}
    for table in _ROLLUPS:
        rows = await queries.fetch_rows(
            f"SELECT * FROM {table} WHERE merchant_id = :m",  # noqa: S608 - the names above
            m=shop.merchant.id,
        )
        out[table] = sorted(json.dumps(row, default=str, sort_keys=True) for row in rows)
    return out


def _same_figures(incremental: dict[str, list[str]], rebuilt: dict[str, list[str]]) -> None:
    for table in _ROLLUPS:  # a refresh may leave rows of zeros behind (a refunded purchase's day)
        zero = [r for r in incremental[table] if r not in rebuilt[table]]
        assert all(_all_zero(json.loads(r)) for r in zero), (table, zero)
        assert [r for r in rebuilt[table] if r not in incremental[table]] == [], table


async def test_a_rebuild_in_batches_gives_the_figures_the_refreshes_gave(
    client: TestClient, shop: Shop
) -> None:
    refreshed = await _rollups(shop)
    assert refreshed["sales_day"] and refreshed["member_stats"] and refreshed["points_day"]
    steps = await refresh.rebuild(shop.merchant.id, batch=2)  # two ids a transaction
    assert steps > 10
    _same_figures(refreshed, await _rollups(shop))
    assert await refresh.rebuild(shop.merchant.id) < steps  # done: a new rebuild starts afresh
    _same_figures(refreshed, await _rollups(shop))


async def test_a_rebuild_resumes_and_counts_what_changed_meanwhile_once(
    client: TestClient, shop: Shop
) -> None:
    step = "SELECT memberbot_analytics_rebuild_step(:m, 3) AS phase"
    phases = [(await queries.fetch_one(step, m=shop.merchant.id))["phase"] for _ in range(3)]
    assert phases[0] == "purchase"  # then it stops half-way (a crash): the steps so far are committed
    first = await queries.fetch_one(
        "SELECT min(id) AS id FROM purchase WHERE merchant_id = :m AND status = 'completed'",
        m=shop.merchant.id,
    )
    await queries.fetch_rows("UPDATE purchase SET status = 'refunded' WHERE id = :id", id=first["id"])
    await _purchase(shop, "meanwhile", "B", "2026-11-05 10:00", shop.east, shop.bob, [(T1, 2)])
    await _points(shop, "B", "grant", 50, "2026-11-05 11:00")
    assert await refresh.refresh() == {"rolled_up": 0}  # the refresher waits for the rebuild
    await refresh.rebuild(shop.merchant.id, batch=3)  # resumes
    await refresh.refresh()  # what was queued for ids the rebuild had passed, or after its last ids
    resumed = await _rollups(shop)
    await refresh.rebuild(shop.merchant.id)  # from scratch, every id in one batch
    _same_figures(resumed, await _rollups(shop))
    assert await queries.fetch_rows("SELECT 1 FROM analytics_queue") == []


async def test_a_one_transaction_rebuild_ends_a_batched_one_under_way(client: TestClient, shop: Shop) -> None:
    refreshed = await _rollups(shop)
    for _ in range(3):
        await queries.fetch_one("SELECT memberbot_analytics_rebuild_step(:m, 2) AS phase", m=shop.merchant.id)
    await queries.fetch_rows("SELECT memberbot_analytics_rebuild(:m)", m=shop.merchant.id)
    _same_figures(refreshed, await _rollups(shop))
    await _purchase(shop, "after", "B", "2026-11-05 10:00", shop.east, shop.bob, [(T1, 1)])
    assert await refresh.refresh() == {"rolled_up": 1}  # the refresher is not held back any more
    after = await _rollups(shop)
    await refresh.rebuild(shop.merchant.id, batch=2)  # starts afresh: nothing counted twice
    _same_figures(after, await _rollups(shop))


def _all_zero(row: dict[str, Any]) -> bool:
    measures = ("purchases", "amount_fen", "discount_fen", "paid_fen", "qty", "revenue_fen", "cost_fen",
                "costed_revenue_fen")  # fmt: skip
    return all(row.get(k, 0) == 0 for k in measures)


async def test_bad_ranges_are_refused_naming_the_field(client: TestClient, shop: Shop) -> None:
    backwards = await client.get(
        "/api/admin/analytics/sales/trend?date_from=2026-11-10&date_to=2026-11-01", headers=shop.admin
    )
    assert backwards.status == 400
    assert (await backwards.json())["error"]["field"] == "date_from"
    grain = await client.get("/api/admin/analytics/sales/trend?grain=hour", headers=shop.admin)
    assert grain.status == 400
    assert (await grain.json())["error"]["field"] == "grain"


async def test_analyses_and_exports_read_the_read_connection(
    aiohttp_client: Any, make_app: Any, shop: Shop, database_url: str
) -> None:
    """With DATABASE_READ_URL set, analyses and member exports read that database: here a second,
    migrated database that holds only what the test puts there."""
    replica = await _replica_database(database_url)
    app_client = await aiohttp_client(make_app(database_read_url=replica))
    # Logged in on this app: with in-process Redis each app keeps its own sessions.
    admin = await staff_headers(app_client, shop.merchant, "admin", "replica-admin")
    primary = await get(app_client, admin, "members/new", **NOV)
    assert primary["summary"]["total"] == 0  # the replica has no rollups
    conn = await _connect(replica)
    try:
        await conn.execute(
            "INSERT INTO member_day (merchant_id, day, store_id, source, staff_id, members)"
            " VALUES ($1, '2026-11-04', 1, 'import', 0, 7)",
            shop.merchant.id,
        )
    finally:
        await conn.close()
    seen = await get(app_client, admin, "members/new", **NOV)
    assert seen["summary"]["total"] == 7 and seen["summary"]["import"] == 7
    export = await app_client.get("/api/admin/members/export", headers=admin)
    assert export.status == 200
    assert (await export.read()).decode("utf-8-sig").strip().count("\n") == 0  # the header only


async def _connect(url: str) -> Any:
    return await asyncpg.connect(dbutil.dsn(url))


async def _replica_database(url: str) -> str:
    """`<database>_replica` on the same server, migrated and emptied. (The URL may carry a query, such as
    the embedded server's `?host=<socket dir>`: only its path names the database.)"""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    replica = urlunsplit(parts._replace(path=f"/{name}_replica"))
    conn = await _connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", f"{name}_replica"):
            await conn.execute(f'CREATE DATABASE "{name}_replica"')
    finally:
        await conn.close()
    await dbutil.reset_postgres(replica)
    await dbutil.migrate(replica)
    return replica


def test_a_read_url_needs_a_primary_and_stays_out_of_the_orm_registry() -> None:
    from bot.settings import Settings
    from models import read_client, tortoise_config

    with pytest.raises(ValueError, match="DATABASE_READ_URL needs DATABASE_URL"):
        Settings(database_read_url="postgres://r@replica/db", secret_key="x" * 32)
    client = read_client("postgres://r@replica:5432/db")
    assert (client.host, client.user, client.database) == ("replica", "r", "db")
    # One registered connection: `in_transaction()` needs no connection name.
    assert list(tortoise_config("postgres://p@primary:5432/db")["connections"]) == ["default"]


def test_every_analysis_has_json_and_an_export_in_the_registry() -> None:
    from webhooks import admin_analytics

    paths = {e.path for e in admin_analytics.routes.endpoints}
    for spec in admin_analytics.ANALYSES:
        assert {f"/api/admin/analytics/{spec.path}", f"/api/admin/analytics/{spec.path}/export"} <= paths
    assert len(admin_analytics.ANALYSES) == 19


async def test_refreshes_racing_purchases_and_refunds_miss_and_double_nothing(
    client: TestClient, shop: Shop
) -> None:
    """Purchases and refunds committed while refreshes run (several at once) end up in the rollups
    exactly once: the final figures equal a rebuild from the purchases themselves."""

    async def buy(n: int) -> None:
        at = f"2026-11-{1 + n % 9:02d} 1{n % 10}:00"
        made = await _purchase(shop, f"race-{n}", "BDE"[n % 3], at, shop.east, shop.bob, [(T1, 1 + n % 3)])
        if n % 5 == 0:
            await queries.fetch_rows("UPDATE purchase SET status = 'refunded' WHERE id = :id", id=made)

    async def refresher() -> None:
        for _ in range(5):
            await refresh.refresh(batch=7)

    await asyncio.gather(*(buy(n) for n in range(60)), refresher(), refresher())
    await refresh.refresh()
    rows = await queries.fetch_rows(
        "SELECT day, store_id, staff_id, purchases, paid_fen FROM sales_day WHERE merchant_id = :m"
        " AND purchases <> 0 ORDER BY 1, 2, 3",
        m=shop.merchant.id,
    )
    await refresh.rebuild(shop.merchant.id)
    rebuilt = await queries.fetch_rows(
        "SELECT day, store_id, staff_id, purchases, paid_fen FROM sales_day WHERE merchant_id = :m"
        " ORDER BY 1, 2, 3",
        m=shop.merchant.id,
    )
    assert rows == rebuilt
    november = await get(client, shop.admin, "sales/trend", **NOV)
    assert november["summary"]["purchases"] == 2 + 48  # P4, P6 and the 60 less the 12 refunded
    assert await queries.fetch_rows("SELECT 1 FROM analytics_queue") == []


async def test_a_range_is_bounded(client: TestClient, shop: Shop) -> None:
    ancient = await client.get("/api/admin/analytics/sales/trend?date_from=1999-12-31", headers=shop.admin)
    assert ancient.status == 400
    assert (await ancient.json())["error"]["field"] == "date_from"
    long = await client.get("/api/admin/analytics/sales/trend?date_from=2000-01-01", headers=shop.admin)
    assert long.status == 400  # from 2000 to today is more than the longest range
    assert (await long.json())["error"]["field"] == "date_from"
    future = await client.get("/api/admin/analytics/sales/trend?date_from=2090-01-01", headers=shop.admin)
    assert future.status == 400  # after today, the range's default end


def _as_csv(value: Any, unit: str) -> str:
    if value is None:
        return ""
    if unit == "fen":
        return f"{value / 100:.2f}"
    if unit == "bool":
        return "是" if value else "否"
    if unit == "datetime":
        return datetime.fromisoformat(value).astimezone(ZONE).strftime("%Y-%m-%d %H:%M")
    return str(value)


@pytest.mark.parametrize("name", [spec.path for spec in ANALYSES])
async def test_every_export_is_its_json_report_as_csv(client: TestClient, shop: Shop, name: str) -> None:
    cup = await MallItem.create(merchant=shop.merchant, kind="shipped", name="杯", price_points=1, stock=1)
    await queries.fetch_rows(
        "INSERT INTO mall_order (merchant_id, member_id, item_id, qty, points, cash_fen, status,"
        " idempotency_key, address, local_day, created_at) VALUES (:merchant, :member, :item, 1, 100, 0,"
        " 'to_ship', 'o1', '{\"region\": \"广东省\"}', '2026-11-09', :at)",
        merchant=shop.merchant.id, member=shop.members["A"], at=local("2026-11-09 10:00"), item=cup.id,
    )  # fmt: skip
    query: dict[str, Any] = (
        {} if name == "sales/deliveries" else {**ALL, "days": 1} if "churn" in name else ALL
    )
    if name == "members/cycle":
        query = {"within_days": 3650}
    if name == "members/credit":
        query = {"date_to": (await _overdue_credit(shop)).isoformat()}
    report = await get(client, shop.admin, name, **query)
    assert report["rows"], name  # every analysis has something to show for this shop
    response = await client.get(f"/api/admin/analytics/{name}/export?{urlencode(query)}", headers=shop.admin)
    assert response.status == 200, await response.text()
    lines = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    columns = report["columns"]
    assert lines[0] == [c["title"] + ("（元）" if c["unit"] == "fen" else "") for c in columns]
    assert lines[1:] == [[_as_csv(row[c["key"]], c["unit"]) for c in columns] for row in report["rows"]]


async def _overdue_credit(shop: Shop) -> date:
    """B owes 30.00 on credit, charged now and due in the merchant's 30 days; the day 40 days ahead."""
    from handlers.credit import ledger as credit
    from handlers.till.purchase import PurchaseRequest, record_purchase
    from tests.support.factories import EFFECTS

    now = datetime.now(UTC)
    await credit.set_limit(
        shop.merchant, shop.members["B"], 10_000, key="l1", now=now, actor="staff:1", reason="月结"
    )
    request = PurchaseRequest("credit-1", shop.members["B"], 5000, credit_fen=3000)
    await record_purchase(shop.merchant, None, request, now=now, effects=EFFECTS)
    return datetime.now(ZONE).date() + timedelta(days=40)


async def test_credit_warning_delegates_to_the_credit_overdue_query(client: TestClient, shop: Shop) -> None:
    ahead = await _overdue_credit(shop)
    assert (await get(client, shop.admin, "members/credit"))["rows"] == []  # nothing is due yet
    report = await get(client, shop.admin, "members/credit", date_to=ahead.isoformat())
    due = await queries.fetch_one("SELECT due_at FROM credit_entry WHERE kind = 'charge'")
    as_of = datetime.combine(ahead + timedelta(days=1), datetime.min.time(), ZONE)
    assert pick(report["rows"], "member_code", "overdue_fen", "days_overdue", "owed_fen", "limit_fen") == [
        ("B", 3000, (as_of - due["due_at"]).days, 3000, 10_000)
    ]
    assert report["summary"]["members"] == 1 and report["summary"]["overdue_fen"] == 3000
    assert (await get(client, shop.manager, "members/credit", date_to=ahead.isoformat()))["rows"] == [
        report["rows"][0]
    ]  # B was acquired by the manager's store
    east = await get(client, shop.admin, "members/credit", store_id=shop.east.id, date_to=ahead.isoformat())
    assert east["rows"] == []
