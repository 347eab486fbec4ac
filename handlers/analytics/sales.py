"""Sales analyses (seed 002 §6): categories, trend, staff and product rankings from the sales rollups
(migration 0021, refreshed every minute); the mall's stock and shipping straight from its tables.

Revenue is at the items' unit prices (a purchase's discount is not spread over its items); cost is the
unit cost the till recorded with each item, and profit and margin count only the items whose cost was
known (`costed_revenue_fen`). The trend's amount, discount and paid are the purchases' own. A refunded
purchase leaves every figure of the day it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from handlers.analytics.report import Column, Grain, Report, Window, period_label, periods, rate, whole_months
from handlers.core import queries

MAX_LIST = 500
ProductSort = Literal["revenue", "qty", "profit"]
_MONEY = (
    Column("qty", "销量"),
    Column("revenue_fen", "销售额", "fen"),
    Column("cost_fen", "成本", "fen"),
    Column("profit_fen", "毛利", "fen"),
    Column("margin", "毛利率", "rate"),
)


def _money(row: dict[str, Any]) -> dict[str, Any]:
    revenue, cost, costed = int(row["revenue_fen"]), int(row["cost_fen"]), int(row["costed_revenue_fen"])
    return {
        "qty": int(row["qty"]),
        "revenue_fen": revenue,
        "cost_fen": cost,
        "profit_fen": costed - cost,
        "margin": rate(costed - cost, costed),
        "uncosted_revenue_fen": revenue - costed,
    }


# By category ---------------------------------------------------------------------------------------

_CATEGORY_SQL = """
SELECT category, sum(qty)::bigint AS qty, sum(revenue_fen)::bigint AS revenue_fen,
       sum(cost_fen)::bigint AS cost_fen, sum(costed_revenue_fen)::bigint AS costed_revenue_fen
  FROM {table}
 WHERE merchant_id = :merchant AND {column} >= :start AND {column} < :end AND {store}
 GROUP BY category
"""
_SUMS = ("qty", "revenue_fen", "cost_fen", "costed_revenue_fen")


async def by_category(window: Window) -> Report:
    """Quantity, revenue, cost, profit and margin per product category (whole months from the monthly
    rollup, the days around them from the daily one)."""
    first, last = window.span()
    totals: dict[str, dict[str, int]] = {}
    for table, column, start, end in _parts(first, last, "category"):
        sql = _CATEGORY_SQL.format(table=table, column=column, store=window.store_clause("store_id"))
        for r in await queries.fetch_read(sql, **window.params(start=start, end=end)):
            total = totals.setdefault(r["category"], dict.fromkeys(_SUMS, 0))
            for key in _SUMS:
                total[key] += int(r[key])
    rows = [
        {"category": category or "未分类", **_money(t)}
        for category, t in totals.items()
        if t["qty"] or t["revenue_fen"]
    ]
    rows.sort(key=lambda row: (-row["revenue_fen"], row["category"]))
    columns = (
        Column("category", "品类", "text"),
        *_MONEY,
        Column("uncosted_revenue_fen", "无成本销售额", "fen"),
    )
    return Report(columns, rows, {"first": first, "last": last, **_totals(rows)})


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    revenue = sum(r["revenue_fen"] for r in rows)
    cost = sum(r["cost_fen"] for r in rows)
    profit = sum(r["profit_fen"] for r in rows)
    costed = revenue - sum(r["uncosted_revenue_fen"] for r in rows)
    qty = sum(r["qty"] for r in rows)
    return {
        "qty": qty,
        "revenue_fen": revenue,
        "cost_fen": cost,
        "profit_fen": profit,
        "margin": rate(profit, costed),
    }


# Trend ---------------------------------------------------------------------------------------------

_TREND_SQL = """
SELECT date_trunc(:grain, day::timestamp)::date AS period, sum(purchases)::bigint AS purchases,
       sum(amount_fen)::bigint AS amount_fen, sum(discount_fen)::bigint AS discount_fen,
       sum(paid_fen)::bigint AS paid_fen
  FROM sales_day
 WHERE merchant_id = :merchant AND day >= :first AND day <= :last AND {store}
 GROUP BY 1
"""
_TREND_COST_SQL = """
SELECT date_trunc(:grain, {column}::timestamp)::date AS period, sum(cost_fen)::bigint AS cost_fen,
       sum(costed_revenue_fen)::bigint AS costed_revenue_fen
  FROM {table}
 WHERE merchant_id = :merchant AND {column} >= :start AND {column} < :end AND {store}
 GROUP BY 1
"""


async def trend(window: Window, grain: Grain = "day") -> Report:
    """Purchases, amount, discount, cash paid, average ticket, cost and profit per period."""
    first, last = window.span()
    params = window.params(grain=grain, first=first, last=last)
    store = window.store_clause("store_id")
    sales = {r["period"]: r for r in await queries.fetch_read(_TREND_SQL.format(store=store), **params)}
    # Whole months from the monthly rollup when a period is months long; days from the daily one.
    ranges = (
        _parts(first, last, "category")
        if grain in ("month", "quarter", "year")
        else [("sales_day_category", "day", first, last + timedelta(days=1))]
    )
    costs: dict[date, dict[str, int]] = {}
    for table, column, start, end in ranges:
        sql = _TREND_COST_SQL.format(table=table, column=column, store=store)
        for r in await queries.fetch_read(sql, **window.params(grain=grain, start=start, end=end)):
            line = costs.setdefault(r["period"], {"cost_fen": 0, "costed_revenue_fen": 0})
            line["cost_fen"] += int(r["cost_fen"])
            line["costed_revenue_fen"] += int(r["costed_revenue_fen"])
    rows: list[dict[str, Any]] = []
    for start in periods(first, last, grain):
        s, c = sales.get(start, {}), costs.get(start, {"cost_fen": 0, "costed_revenue_fen": 0})
        purchases, paid = int(s.get("purchases", 0)), int(s.get("paid_fen", 0))
        cost, costed = int(c.get("cost_fen", 0)), int(c.get("costed_revenue_fen", 0))
        rows.append(
            {
                "period": period_label(start, grain),
                "start": start,
                "purchases": purchases,
                "amount_fen": int(s.get("amount_fen", 0)),
                "discount_fen": int(s.get("discount_fen", 0)),
                "paid_fen": paid,
                "average_fen": paid // purchases if purchases else 0,
                "cost_fen": cost,
                "profit_fen": costed - cost,
            }
        )
    columns = (
        Column("period", "时段", "text"),
        Column("start", "开始日期", "date"),
        Column("purchases", "笔数"),
        Column("amount_fen", "应收", "fen"),
        Column("discount_fen", "优惠", "fen"),
        Column("paid_fen", "实收", "fen"),
        Column("average_fen", "客单价", "fen"),
        Column("cost_fen", "成本", "fen"),
        Column("profit_fen", "毛利", "fen"),
    )
    summary = {
        k: sum(r[k] for r in rows)
        for k in ("purchases", "amount_fen", "discount_fen", "paid_fen", "profit_fen")
    }
    return Report(columns, rows, {"first": first, "last": last, **summary})


# Staff ranking -------------------------------------------------------------------------------------

_STAFF_SQL = """
SELECT d.staff_id, s.username, st.name AS store_name, sum(d.purchases)::bigint AS purchases,
       sum(d.paid_fen)::bigint AS paid_fen, sum(d.amount_fen)::bigint AS amount_fen
  FROM sales_day d
  JOIN staff s ON s.id = d.staff_id
  LEFT JOIN store st ON st.id = s.store_id
 WHERE d.merchant_id = :merchant AND d.day >= :first AND d.day <= :last AND d.staff_id <> 0 AND {store}
 GROUP BY d.staff_id, s.username, st.name
HAVING sum(d.purchases) <> 0
 ORDER BY paid_fen DESC, d.staff_id
 LIMIT :limit
"""


async def staff_ranking(window: Window, limit: int = 50) -> Report:
    """Staff by cash taken at the till in the range: purchases, amount, paid, average ticket."""
    first, last = window.span()
    raw = await queries.fetch_read(
        _STAFF_SQL.format(store=window.store_clause("d.store_id")),
        **window.params(first=first, last=last, limit=min(limit, MAX_LIST)),
    )
    rows = [
        {
            "rank": i,
            "staff_id": r["staff_id"],
            "username": r["username"],
            "store": r["store_name"],
            "purchases": int(r["purchases"]),
            "amount_fen": int(r["amount_fen"]),
            "paid_fen": int(r["paid_fen"]),
            "average_fen": int(r["paid_fen"]) // int(r["purchases"]) if r["purchases"] else 0,
        }
        for i, r in enumerate(raw, 1)
    ]
    columns = (
        Column("rank", "排名"),
        Column("staff_id", "员工ID"),
        Column("username", "员工", "text"),
        Column("store", "门店", "text"),
        Column("purchases", "笔数"),
        Column("amount_fen", "应收", "fen"),
        Column("paid_fen", "实收", "fen"),
        Column("average_fen", "客单价", "fen"),
    )
    return Report(columns, rows, {"first": first, "last": last})


# Product ranking -----------------------------------------------------------------------------------

_PRODUCT_PART_SQL = """
SELECT sku, sum(qty)::bigint AS qty, sum(revenue_fen)::bigint AS revenue_fen,
       sum(cost_fen)::bigint AS cost_fen, sum(costed_revenue_fen)::bigint AS costed_revenue_fen
  FROM {table}
 WHERE merchant_id = :merchant AND {column} >= :start AND {column} < :end AND {store}
 GROUP BY sku
"""
_PRODUCTS_SQL = "SELECT sku, name, category FROM product WHERE merchant_id = :merchant AND sku = ANY(:skus)"
_SORTS: dict[str, Callable[[dict[str, Any]], int]] = {
    "revenue": lambda row: int(row["revenue_fen"]),
    "qty": lambda row: int(row["qty"]),
    "profit": lambda row: int(row["profit_fen"]),
}


def _parts(first: date, last: date, kind: str) -> list[tuple[str, str, date, date]]:
    """(table, column, start, end) of each part of [first, last] in the `kind` rollups (`category`,
    `product`): its whole months from the monthly one, the days before and after them from the daily one.
    Each part is one plain range: a plan that suits any range (the statement is prepared once)."""
    month_first, month_end = whole_months(first, last)
    after = last + timedelta(days=1)
    day_table, month_table = f"sales_day_{kind}", f"sales_month_{kind}"
    if month_first >= month_end:
        return [(day_table, "day", first, after)]
    parts = [(month_table, "month", month_first, month_end)]
    if first < month_first:
        parts.append((day_table, "day", first, month_first))
    if month_end < after:
        parts.append((day_table, "day", month_end, after))
    return parts


async def product_ranking(window: Window, limit: int = 50, sort: ProductSort = "revenue") -> Report:
    """Products by revenue (or quantity, or profit) in the range; whole months come from the monthly
    rollup and the days around them from the daily one."""
    first, last = window.span()
    totals: dict[str, dict[str, int]] = {}
    for table, column, start, end in _parts(first, last, "product"):
        sql = _PRODUCT_PART_SQL.format(table=table, column=column, store=window.store_clause("store_id"))
        for r in await queries.fetch_read(sql, **window.params(start=start, end=end)):
            total = totals.setdefault(
                r["sku"], dict.fromkeys(("qty", "revenue_fen", "cost_fen", "costed_revenue_fen"), 0)
            )
            for key in total:
                total[key] += int(r[key])
    lines = [{"sku": sku, **_money(t)} for sku, t in totals.items() if t["qty"] or t["revenue_fen"]]
    lines.sort(key=lambda row: (-_SORTS[sort](row), row["sku"]))
    lines = lines[: min(limit, MAX_LIST)]
    names = {
        r["sku"]: r
        for r in await queries.fetch_read(
            _PRODUCTS_SQL, merchant=window.merchant_id, skus=[line["sku"] for line in lines]
        )
    }
    rows = []
    for i, line in enumerate(lines, 1):
        product = names.get(line["sku"], {})
        rows.append(
            {"rank": i, **line, "name": product.get("name") or "", "category": product.get("category") or ""}
        )
    columns = (
        Column("rank", "排名"),
        Column("sku", "SKU", "text"),
        Column("name", "商品", "text"),
        Column("category", "品类", "text"),
        *_MONEY,
    )
    return Report(columns, rows, {"first": first, "last": last, "sort": sort})


# Mall stock ranking (库存预警) ----------------------------------------------------------------------

_STOCK_SQL = """
SELECT i.id, i.name, i.kind, i.stock, i.low_stock_threshold, i.active,
       COALESCE(o.units, 0) AS redeemed
  FROM mall_item i
  LEFT JOIN (
      SELECT item_id, sum(qty)::bigint AS units FROM mall_order
       WHERE merchant_id = :merchant AND created_at >= :since AND created_at < :until
         AND status NOT IN ('cancelled', 'expired', 'group_failed') AND {store}
       GROUP BY item_id
  ) o ON o.item_id = i.id
 WHERE i.merchant_id = :merchant AND i.kind IN ('pickup', 'shipped')
 ORDER BY (i.low_stock_threshold IS NOT NULL AND i.stock <= i.low_stock_threshold) DESC, i.stock, i.id
 LIMIT :limit
"""


async def stock_ranking(window: Window, limit: int = 100) -> Report:
    """The mall's physical items, those at or below their low-stock threshold first, then by stock:
    units redeemed in the range (orders handed over at the store, with a store), days of stock left at
    that pace. The stock itself is the merchant's, shared by every store."""
    first, last = window.span()
    days = (last - first).days + 1
    raw = await queries.fetch_read(
        _STOCK_SQL.format(store=window.store_clause("store_id")),
        **window.params(
            since=window.moment(first),
            until=window.moment(last + timedelta(days=1)),
            limit=min(limit, MAX_LIST),
        ),
    )
    rows: list[dict[str, Any]] = []
    for r in raw:
        threshold, stock, redeemed = r["low_stock_threshold"], int(r["stock"]), int(r["redeemed"])
        rows.append(
            {
                "item_id": r["id"],
                "name": r["name"],
                "stock": stock,
                "low_stock_threshold": threshold,
                "low": threshold is not None and stock <= threshold,
                "redeemed": redeemed,
                "days_left": round(stock / (redeemed / days), 1) if redeemed else None,
                "active": r["active"],
            }
        )
    columns = (
        Column("item_id", "商品ID"),
        Column("name", "商品", "text"),
        Column("stock", "库存"),
        Column("low_stock_threshold", "预警线"),
        Column("low", "库存预警", "bool"),
        Column("redeemed", "期间兑换"),
        Column("days_left", "可售天数", "days"),
        Column("active", "上架", "bool"),
    )
    return Report(columns, rows, {"first": first, "last": last, "low": sum(1 for r in rows if r["low"])})


# Delivery reminders --------------------------------------------------------------------------------

_DELIVERY_SQL = """
SELECT o.id, o.status, o.qty, o.created_at, i.name AS item, mb.code AS member_code,
       o.address->'shipment'->>'shipped_at' AS shipped_at, o.address->'shipment'->>'shipped_by' AS shipped_by,
       o.address->'shipment'->>'carrier' AS carrier, o.address->'shipment'->>'tracking_no' AS tracking_no
  FROM mall_order o
  JOIN mall_item i ON i.id = o.item_id
  JOIN member mb ON mb.id = o.member_id
 WHERE o.merchant_id = :merchant AND o.status IN ('to_ship', 'shipped')
   AND o.created_at >= :since AND o.created_at < :until
 ORDER BY o.created_at, o.id
 LIMIT :limit
"""
STATUS_TITLES = {"to_ship": "待发货", "shipped": "已发货"}


async def delivery_reminders(
    window: Window,
    ship_days: int = 2,
    deliver_days: int = 7,
    limit: int = 500,
    *,
    now: datetime | None = None,
) -> Report:
    """Open orders of shipped mall items: what is due and by when — an order to ship within `ship_days`
    of being placed, a shipped one delivered within `deliver_days` of shipping — and which staff member
    shipped it. Overdue first is the order of the due time. Orders placed in the range (default: all);
    shipped orders belong to no store, so the store filter does not apply."""
    at = now or datetime.now(UTC)
    since, until = window.registered()
    raw = await queries.fetch_read(
        _DELIVERY_SQL, **window.params(since=since, until=until, limit=min(limit, MAX_LIST))
    )
    rows: list[dict[str, Any]] = []
    for r in raw:
        shipped_at = datetime.fromisoformat(r["shipped_at"]) if r["shipped_at"] else None
        if r["status"] == "to_ship" or shipped_at is None:
            due = r["created_at"] + timedelta(days=ship_days)
            task = "发货"
        else:
            due = shipped_at + timedelta(days=deliver_days)
            task = "确认送达"
        rows.append(
            {
                "order_id": r["id"],
                "item": r["item"],
                "qty": r["qty"],
                "member_code": r["member_code"],
                "status": STATUS_TITLES[r["status"]],
                "task": task,
                "ordered_at": r["created_at"],
                "shipped_at": shipped_at,
                "due_at": due,
                "overdue": due < at,
                "staff": r["shipped_by"] or "",
                "carrier": r["carrier"] or "",
                "tracking_no": r["tracking_no"] or "",
            }
        )
    rows.sort(key=lambda row: (row["due_at"], row["order_id"]))
    columns = (
        Column("order_id", "订单号"),
        Column("item", "商品", "text"),
        Column("qty", "数量"),
        Column("member_code", "会员号", "text"),
        Column("status", "状态", "text"),
        Column("task", "待办", "text"),
        Column("ordered_at", "下单时间", "datetime"),
        Column("shipped_at", "发货时间", "datetime"),
        Column("due_at", "截止时间", "datetime"),
        Column("overdue", "已逾期", "bool"),
        Column("staff", "发货员工", "text"),
        Column("carrier", "快递公司", "text"),
        Column("tracking_no", "运单号", "text"),
    )
    return Report(columns, rows, {"open": len(rows), "overdue": sum(1 for r in rows if r["overdue"])})
