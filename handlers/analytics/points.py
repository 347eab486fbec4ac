"""The points economy (seed 003): points issued, redeemed and expired per period and by source, the
outstanding liability in yuan, breakage and redemption rates, and the campaign pools' budgets.

Reads the `points_day` rollup (migration 0021, refreshed every minute): points in and out per
merchant-local day, posting kind and the member's acquiring store. Issued: every earn, grant and
opening balance, and adjustments up; redeemed: every spend (mall, offset at the till, tier upgrade,
make-up check-in); expired: lapsed lots; reversals (a refund's claw-back, a cancelled order's points
returned) and adjustments down count in the net only. The liability is the net of every posting up to
the end of the range, valued at the merchant's `points_per_yuan_cash`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from handlers.analytics.report import Column, Grain, Report, Window, period_label, periods, rate
from handlers.core import queries
from handlers.loyalty import config as loyalty_config

KIND_TITLES = {
    "earn_purchase": "消费积分",
    "earn_checkin": "签到积分",
    "earn_referral": "推荐积分",
    "earn_registration": "注册积分",
    "earn_profile": "完善资料积分",
    "earn_promotion": "活动积分",
    "earn_tier_gift": "等级礼包",
    "grant": "手动发放",
    "opening": "期初导入",
    "spend_redemption": "商城兑换",
    "spend_offset": "消费抵扣",
    "spend_upgrade": "购买等级",
    "spend_makeup": "补签",
    "expire": "过期",
    "reverse": "冲正",
    "adjust": "调整",
}
ISSUED = ("earn_", "grant", "opening", "adjust")
REDEEMED = ("spend_",)

_BY_PERIOD_SQL = """
SELECT date_trunc(:grain, day::timestamp)::date AS period, kind, sum(points_in)::bigint AS points_in,
       sum(points_out)::bigint AS points_out
  FROM points_day
 WHERE merchant_id = :merchant AND day >= :first AND day <= :last AND {store}
 GROUP BY 1, 2
"""
_BALANCE_SQL = """
SELECT COALESCE(sum(points_in - points_out), 0)::bigint AS net
  FROM points_day
 WHERE merchant_id = :merchant AND day <= :last AND {store}
"""
_POOLS_SQL = "SELECT code, budget, granted FROM points_pool WHERE merchant_id = :merchant ORDER BY code"


def _flows(kind: str, points_in: int, points_out: int) -> dict[str, int]:
    return {
        "issued": points_in if kind.startswith(ISSUED) else 0,
        "redeemed": points_out if kind.startswith(REDEEMED) else 0,
        "expired": points_out if kind == "expire" else 0,
        "net": points_in - points_out,
    }


_FLOW_COLUMNS = (
    Column("issued", "发放", "points"),
    Column("redeemed", "兑换使用", "points"),
    Column("expired", "过期", "points"),
    Column("net", "净变化", "points"),
)


async def _fetch(window: Window, grain: Grain) -> tuple[Any, Any, list[dict[str, Any]]]:
    first, last = window.span()
    raw = await queries.fetch_read(
        _BY_PERIOD_SQL.format(store=window.store_clause("store_id")),
        **window.params(grain=grain, first=first, last=last),
    )
    return first, last, raw


async def by_period(window: Window, grain: Grain = "day") -> Report:
    """Points issued, redeemed, expired and the net change per period."""
    first, last, raw = await _fetch(window, grain)
    rows: dict[date, dict[str, Any]] = {
        start: {
            "period": period_label(start, grain),
            "start": start,
            "issued": 0,
            "redeemed": 0,
            "expired": 0,
            "net": 0,
        }
        for start in periods(first, last, grain)
    }
    for r in raw:
        line = rows[r["period"]]
        for key, value in _flows(r["kind"], int(r["points_in"]), int(r["points_out"])).items():
            line[key] += value
    columns = (Column("period", "时段", "text"), Column("start", "开始日期", "date"), *_FLOW_COLUMNS)
    totals = {k: sum(line[k] for line in rows.values()) for k in ("issued", "redeemed", "expired", "net")}
    return Report(columns, list(rows.values()), {"first": first, "last": last, **totals})


async def by_source(window: Window) -> Report:
    """Points in and out per source (posting kind) over the range."""
    first, last, raw = await _fetch(window, "year")
    kinds: dict[str, list[int]] = {}
    for r in raw:
        total = kinds.setdefault(r["kind"], [0, 0])
        total[0] += int(r["points_in"])
        total[1] += int(r["points_out"])
    rows = [
        {"kind": kind, "source": KIND_TITLES.get(kind, kind), "points_in": pin, "points_out": pout,
         **_flows(kind, pin, pout)}
        for kind, (pin, pout) in sorted(kinds.items())
    ]  # fmt: skip
    columns = (
        Column("kind", "类型代码", "text"),
        Column("source", "来源", "text"),
        Column("points_in", "增加", "points"),
        Column("points_out", "减少", "points"),
        *_FLOW_COLUMNS,
    )
    return Report(columns, rows, {"first": first, "last": last})


async def liability(window: Window) -> Report:
    """Over the range: issued, redeemed, expired, the redemption and breakage rates (of the points
    issued), and the outstanding balance at its end in points and yuan; rows: the campaign pools."""
    first, last, raw = await _fetch(window, "year")
    totals = {"issued": 0, "redeemed": 0, "expired": 0, "net": 0}
    for r in raw:
        for key, value in _flows(r["kind"], int(r["points_in"]), int(r["points_out"])).items():
            totals[key] += value
    balance = await queries.fetch_read(
        _BALANCE_SQL.format(store=window.store_clause("store_id")), **window.params(last=last)
    )
    outstanding = int(balance[0]["net"])
    program = await loyalty_config.program(window.merchant_id)
    pools = await queries.fetch_read(_POOLS_SQL, merchant=window.merchant_id)
    rows = [
        {"pool": p["code"], "budget": p["budget"], "granted": p["granted"],
         "left": p["budget"] - p["granted"], "used_rate": rate(p["granted"], p["budget"])}
        for p in pools
    ]  # fmt: skip
    summary = {
        "first": first,
        "last": last,
        **totals,
        "redemption_rate": rate(totals["redeemed"], totals["issued"]),
        "breakage_rate": rate(totals["expired"], totals["issued"]),
        "outstanding_points": outstanding,
        "points_per_yuan": program.points_per_yuan_cash,
        "outstanding_fen": outstanding * 100 // program.points_per_yuan_cash,
    }
    columns = (
        Column("pool", "积分池", "text"),
        Column("budget", "预算", "points"),
        Column("granted", "已发放", "points"),
        Column("left", "剩余", "points"),
        Column("used_rate", "使用率", "rate"),
    )
    return Report(columns, rows, summary)
