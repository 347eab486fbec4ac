"""The dashboard's figures on known data: new and active members, revenue, repeat rate, the points
liability in yuan, the daily trend and the low-stock mall items (`handlers.overview.kpis`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aiohttp.test_utils import TestClient

from handlers.analytics import refresh, thresholds
from handlers.loyalty import config as loyalty_config
from handlers.mall import catalogue
from handlers.overview import kpis
from handlers.till import purchase as purchases
from handlers.till import refund as refunds
from models.mall import ItemKind
from models.member import Member
from models.merchant import Merchant
from models.purchase import Purchase
from tests.support.console import login, make_staff
from tests.support.factories import EFFECTS, make_member, make_merchant


def local(day: str, hour: int = 12, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as an aware UTC instant."""
    naive = datetime.fromisoformat(day).replace(hour=hour, minute=minute)
    return naive.replace(tzinfo=UTC) - timedelta(hours=8)


async def member(shop: Merchant, key: str, registered: datetime) -> Member:
    row = await make_member(shop, openid=f"o-{key}")
    await Member.filter(id=row.id).update(registered_at=registered)
    return row


async def buy(shop: Merchant, who: Member, key: str, fen: int, at: datetime) -> int:
    """A till purchase, dated `at` (the row and the member's trigger-kept last visit: the database
    stamps both with its own clock)."""
    request = purchases.PurchaseRequest(key, who.id, fen)
    made = await purchases.record_purchase(shop, None, request, now=at, effects=EFFECTS)
    await Purchase.filter(id=made.purchase_id).update(created_at=at)
    latest = await Purchase.filter(member_id=who.id).order_by("-created_at").first()
    assert latest is not None
    await Member.filter(id=who.id).update(last_visit_at=latest.created_at)
    return made.purchase_id


NOW = local("2024-06-30", 15)


async def seed(shop: Merchant) -> None:
    today = await member(shop, "today", local("2024-06-30", 10))
    week = await member(shop, "week", local("2024-06-26"))
    month = await member(shop, "month", local("2024-06-05"))
    old = await member(shop, "old", local("2024-01-01"))
    await buy(shop, today, "t1", 10_000, local("2024-06-30", 10, 30))
    await buy(shop, today, "t2", 5_000, local("2024-06-30", 11))
    await buy(shop, week, "w1", 20_000, local("2024-06-27"))
    await buy(shop, month, "m1", 30_000, local("2024-06-10"))
    await buy(shop, month, "m2", 2_000, local("2024-06-28"))
    await buy(shop, old, "o1", 100_000, local("2024-05-01"))  # before the 30 days
    refunded = await buy(shop, old, "o2", 99_900, local("2024-06-30", 9))  # a visit, not revenue
    await refunds.refund_purchase(
        shop, None, refunded, key="r", now=local("2024-06-30", 9, 30), effects=EFFECTS
    )


async def test_figures_for_today_7_and_30_days(client: TestClient) -> None:
    shop = await make_merchant()
    await loyalty_config.save_program(shop.id, {"points_per_yuan_cash": 200}, actor="test")
    await seed(shop)
    board = await kpis.dashboard(shop, now=NOW)
    assert board.today == date(2024, 6, 30)
    got = {
        p.key: (p.new_members, p.active_members, p.revenue_fen, p.buyers, p.repeat_buyers)
        for p in board.periods
    }
    assert got == {
        "today": (1, 2, 15_000, 1, 1),
        "7d": (2, 4, 37_000, 3, 1),
        "30d": (3, 4, 67_000, 3, 2),
    }
    assert [p.repeat_rate for p in board.periods] == [1.0, 1 / 3, 2 / 3]
    trend = {day.day: (day.new_members, day.revenue_fen) for day in board.trend}
    assert len(board.trend) == kpis.TREND_DAYS and board.trend[0].day == date(2024, 6, 1)
    assert trend[date(2024, 6, 30)] == (1, 15_000)
    assert trend[date(2024, 6, 27)] == (0, 20_000)
    assert trend[date(2024, 6, 26)] == (1, 0)
    assert trend[date(2024, 6, 5)] == (1, 0)
    assert sum(revenue for _, revenue in trend.values()) == 67_000


async def test_low_stock_and_the_warnings_come_from_the_analyses(client: TestClient) -> None:
    shop = await make_merchant()
    await make_staff(shop, "alice", "admin", None)
    for name, stock, threshold in (("杯子", 3, 5), ("雨伞", 10, 10), ("毛巾", 11, 10), ("无预警", 0, None)):
        data = catalogue.ItemInput(name=name, price_points=100)
        item = await catalogue.create_item(shop, ItemKind.PICKUP, data, stock=stock, actor="test")
        await thresholds.set_low_stock(shop.id, item.id, threshold, actor="test")
    old = await member(shop, "old", local("2024-01-01"))
    await buy(shop, old, "o1", 1_000, local("2024-01-02"))
    assert (await login(client, "shop", "alice")).status == 303
    html = await (await client.get("/admin/")).text()
    low = html[html.index('class="low-stock"') :]
    assert "<td>杯子</td><td>3</td><td>5</td>" in low and "<td>雨伞</td><td>10</td><td>10</td>" in low
    assert "毛巾" not in low and "无预警" not in low
    assert 'data-warning="churn">1<' in html  # no visit in 90 days
    assert 'data-warning="credit">0<' in html


async def test_the_dashboard_page_shows_the_figures(client: TestClient) -> None:
    shop = await make_merchant()
    await make_staff(shop, "alice", "admin", None)
    member_row = await member(shop, "a", datetime.now(UTC))
    await buy(shop, member_row, "k1", 12_345, datetime.now(UTC))
    await refresh.rebuild(
        shop.id
    )  # the analyses' roll-ups (the worker keeps them), which the liability reads
    assert (await login(client, "shop", "alice")).status == 303
    html = await (await client.get("/admin/")).text()
    assert 'data-kpi="today-revenue">123.45<' in html
    assert 'data-kpi="30d-new">1<' in html
    assert 'data-kpi="liability">1.23<' in html  # 123 points at 100 points a yuan (the analyses' liability)
