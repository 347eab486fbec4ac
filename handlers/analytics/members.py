"""Member analyses (seed 002 §5): tiers, new members, acquiring staff, gender and age, regions,
referrals, churn, consumption cycle, cohorts. All read the read connection (`queries.fetch_read`).

New members, acquiring staff and cohorts read the rollups `member_day`, `member_cohort` and
`member_stats` (migration 0021, refreshed every minute); the snapshots (tiers, gender and age,
regions, churn) read the member table itself, so they are current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from handlers.analytics.report import Column, Grain, Report, Window, period_label, periods, rate, whole_months
from handlers.core import queries
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import referrals
from models.member import MemberSource

SOURCE_TITLES = {
    MemberSource.OA_SUBSCRIBE: "关注公众号",
    MemberSource.OA_REFERRAL: "推荐关注",
    MemberSource.OA_STAFF: "员工推广",
    MemberSource.MINI_PROGRAM: "小程序",
    MemberSource.STAFF: "员工录入",
    MemberSource.IMPORT: "导入",
}
AGE_BANDS = ((0, 18, "18岁以下"), (18, 25, "18-24岁"), (25, 35, "25-34岁"), (35, 45, "35-44岁"),
             (45, 55, "45-54岁"), (55, 200, "55岁及以上"))  # fmt: skip
UNKNOWN_AGE = "未知"
GENDERS = (("male", "男"), ("female", "女"), ("undisclosed", "保密"), ("unknown", "未填"))
MAX_LIST = 500


def _members(window: Window, alias: str = "m") -> str:
    """The members a snapshot counts: the merchant's, not erased, registered in the window, of the store."""
    return (
        f"{alias}.merchant_id = :merchant AND {alias}.anonymized_at IS NULL"
        f" AND {alias}.registered_at >= :since AND {alias}.registered_at < :until"
        f" AND {window.store_clause(f'{alias}.store_id')}"
    )


def _snapshot_params(window: Window, **extra: Any) -> dict[str, Any]:
    since, until = window.registered()
    return window.params(since=since, until=until, **extra)


# Member profiles: tiers, gender and age ----------------------------------------------------------

_SNAPSHOT_SQL = """
SELECT tier_code, gender, age_band, sum(members)::bigint AS members, sum(spend_fen)::bigint AS spend_fen
  FROM member_snapshot
 WHERE merchant_id = :merchant AND month >= :month_first AND month < :month_end AND {store}
 GROUP BY 1, 2, 3
"""
# The days around whole months are few members: each one's tier by its index (a hash join would read
# every tier row).
_PROFILES_SQL = """
SELECT COALESCE((SELECT t.tier_code FROM member_tier t WHERE t.member_id = m.id), '') AS tier_code,
       COALESCE(m.gender, 'unknown') AS gender, memberbot_age_band(m.birthday, :today) AS age_band,
       count(*) AS members, COALESCE(sum(m.lifetime_spend_fen), 0)::bigint AS spend_fen
  FROM member m
 WHERE {members}
 GROUP BY 1, 2, 3
"""
_SNAPSHOT_STATE_SQL = "SELECT refreshed_at, as_of FROM member_snapshot_state WHERE merchant_id = :merchant"
FAR_PAST, FAR_FUTURE = date(1970, 1, 1), date(9999, 1, 1)


@dataclass(frozen=True, slots=True)
class _Split:
    """A registration range as the snapshot's whole months and the member table's days around them."""

    params: dict[str, Any]  # binds `month_first`, `month_end` and the window's
    snapshot: bool  # whole months to read from a snapshot
    edges: list[tuple[datetime, datetime]]  # registration ranges to read from the member table
    fresh: dict[str, Any]


async def _split(window: Window, **extra: Any) -> _Split:
    """Everything from the snapshot when the range is every member; whole months from it and the other
    days from the members otherwise; everything from the members while no snapshot was ever taken."""
    state = await queries.fetch_read(_SNAPSHOT_STATE_SQL, merchant=window.merchant_id)
    if not state:
        month_first = month_end = FAR_PAST
    elif window.date_from is None and window.date_to is None:
        month_first, month_end = FAR_PAST, FAR_FUTURE
    else:
        month_first, month_end = whole_months(window.date_from or FAR_PAST, window.date_to or FAR_FUTURE)
    params = _snapshot_params(window, month_first=month_first, month_end=month_end, **extra)
    since, until = params["since"], params["until"]
    edge_from = window.moment(month_first) if month_first > FAR_PAST else since
    edge_to = window.moment(month_end) if month_end < FAR_FUTURE else until
    if month_first >= month_end:  # no whole month: every registration of the range from the members
        edges = [(since, until)]
    else:  # each a plain range (an OR of two would make the planner read every member)
        edges = [
            (start, end)
            for start, end in ((since, min(edge_from, until)), (max(edge_to, since), until))
            if start < end
        ]
    fresh = {"snapshot_at": state[0]["refreshed_at"], "ages_on": state[0]["as_of"]} if state else {}
    return _Split(params, month_first < month_end, edges, fresh)


async def _profiles(window: Window) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Members per (tier code, '' for none; gender; age band index) with their lifetime spend: the whole
    registration months of the range from `member_snapshot` (as of its last refresh), the days around
    them from the member table."""
    split = await _split(window, today=window.today)
    rows: list[dict[str, Any]] = []
    if split.snapshot:
        rows += await queries.fetch_read(
            _SNAPSHOT_SQL.format(store=window.store_clause("store_id")), **split.params
        )
    for since, until in split.edges:
        sql = _PROFILES_SQL.format(members=_members(window))
        rows += await queries.fetch_read(sql, **{**split.params, "since": since, "until": until})
    return rows, split.fresh


async def tiers(window: Window) -> Report:
    """Members per tier (members without a tier row are in the base tier), with their lifetime spend."""
    _, ladder = await loyalty_config.current_tiers(window.merchant_id)
    base = min(ladder, key=lambda tier: tier.rank).code
    raw, fresh = await _profiles(window)
    counts: dict[str, list[int]] = {}
    for row in raw:
        code = row["tier_code"] or base
        total = counts.setdefault(code, [0, 0])
        total[0] += int(row["members"])
        total[1] += int(row["spend_fen"])
    everyone = sum(c[0] for c in counts.values())
    known = {tier.code for tier in ladder}
    ordered = [(t.code, t.name, t.rank) for t in sorted(ladder, key=lambda tier: tier.rank)]
    ordered += [(code, code, -1) for code in sorted(counts) if code not in known]  # retired tiers
    rows = [
        {
            "tier_code": code,
            "tier_name": name,
            "members": counts.get(code, [0, 0])[0],
            "share": rate(counts.get(code, [0, 0])[0], everyone),
            "spend_fen": counts.get(code, [0, 0])[1],
        }
        for code, name, _ in ordered
    ]
    columns = (
        Column("tier_code", "等级代码", "text"),
        Column("tier_name", "等级", "text"),
        Column("members", "会员数"),
        Column("share", "占比", "rate"),
        Column("spend_fen", "累计消费", "fen"),
    )
    return Report(columns, rows, {"members": everyone, **fresh})


# New members ---------------------------------------------------------------------------------------

_NEW_SQL = """
SELECT date_trunc(:grain, day)::date AS period, source, sum(members)::bigint AS members
  FROM member_day
 WHERE merchant_id = :merchant AND day >= :first AND day <= :last AND {store}
 GROUP BY 1, 2
"""


async def new_members(window: Window, grain: Grain = "day") -> Report:
    """New members per day / week / month / quarter / year, in total and by source."""
    first, last = window.span()
    raw = await queries.fetch_read(
        _NEW_SQL.format(store=window.store_clause("store_id")),
        **window.params(grain=grain, first=first, last=last),
    )
    rows: dict[date, dict[str, Any]] = {
        start: {
            "period": period_label(start, grain),
            "start": start,
            "total": 0,
            **{s.value: 0 for s in MemberSource},
        }
        for start in periods(first, last, grain)
    }
    for row in raw:
        line = rows[row["period"]]
        line[row["source"]] = line.get(row["source"], 0) + int(row["members"])
        line["total"] += int(row["members"])
    columns = (
        Column("period", "时段", "text"),
        Column("start", "开始日期", "date"),
        Column("total", "新会员"),
        *(Column(source.value, title) for source, title in SOURCE_TITLES.items()),
    )
    total = sum(line["total"] for line in rows.values())
    by_source = {s.value: sum(line[s.value] for line in rows.values()) for s in MemberSource}
    return Report(columns, list(rows.values()), {"first": first, "last": last, "total": total, **by_source})


# By acquiring staff --------------------------------------------------------------------------------

_STAFF_SQL = """
SELECT d.staff_id, s.username, st.name AS store_name, sum(d.members)::bigint AS members
  FROM member_day d
  JOIN staff s ON s.id = d.staff_id
  LEFT JOIN store st ON st.id = s.store_id
 WHERE d.merchant_id = :merchant AND d.day >= :first AND d.day <= :last AND d.staff_id <> 0 AND {store}
 GROUP BY d.staff_id, s.username, st.name
 ORDER BY members DESC, d.staff_id
 LIMIT :limit
"""


async def by_staff(window: Window, limit: int = 100) -> Report:
    """Members brought in by each staff member (their QR code) in the range, most first."""
    first, last = window.span()
    raw = await queries.fetch_read(
        _STAFF_SQL.format(store=window.store_clause("d.store_id")),
        **window.params(first=first, last=last, limit=limit),
    )
    rows = [
        {"rank": i, "staff_id": r["staff_id"], "username": r["username"], "store": r["store_name"],
         "members": int(r["members"])}
        for i, r in enumerate(raw, 1)
    ]  # fmt: skip
    columns = (
        Column("rank", "排名"),
        Column("staff_id", "员工ID"),
        Column("username", "员工", "text"),
        Column("store", "门店", "text"),
        Column("members", "拉新会员数"),
    )
    return Report(columns, rows, {"first": first, "last": last, "members": sum(r["members"] for r in rows)})


# Gender and age ------------------------------------------------------------------------------------


async def gender_age(window: Window) -> Report:
    """Members by age band (whole years of age, merchant-local today) and gender."""
    raw, fresh = await _profiles(window)
    bands = [title for _, _, title in AGE_BANDS] + [UNKNOWN_AGE]
    rows: dict[str, dict[str, Any]] = {
        band: {"age_band": band, "total": 0, **{g: 0 for g, _ in GENDERS}} for band in bands
    }
    for row in raw:
        line = rows[bands[int(row["age_band"])]]
        line[row["gender"]] += int(row["members"])
        line["total"] += int(row["members"])
    columns = (
        Column("age_band", "年龄段", "text"),
        *(Column(gender, title) for gender, title in GENDERS),
        Column("total", "合计"),
    )
    totals = {g: sum(line[g] for line in rows.values()) for g, _ in GENDERS}
    return Report(columns, list(rows.values()), {"members": sum(totals.values()), **totals, **fresh})


# Regions -------------------------------------------------------------------------------------------

_REGIONS_SQL = """
WITH stated AS (
    SELECT DISTINCT ON (o.member_id) o.member_id,
           NULLIF(split_part(btrim(o.address->>'region'), ' ', 1), '') AS region
      FROM mall_order o
     WHERE o.merchant_id = :merchant AND o.address ? 'region'
     ORDER BY o.member_id, o.id DESC
)
SELECT CASE WHEN r.region IS NOT NULL THEN 'address' WHEN s.id IS NOT NULL THEN 'store' ELSE 'unknown' END
           AS basis,
       COALESCE(r.region, s.name, '') AS region, count(*) AS members
  FROM member m
  LEFT JOIN stated r ON r.member_id = m.id
  LEFT JOIN store s ON s.id = m.store_id
 WHERE {members}
 GROUP BY 1, 2
"""
_REGIONS_SNAPSHOT_SQL = """
SELECT basis, region, sum(members)::bigint AS members
  FROM member_region_snapshot
 WHERE merchant_id = :merchant AND month >= :month_first AND month < :month_end AND {store}
 GROUP BY 1, 2
"""
BASES = {"address": "收货地址", "store": "所属门店", "unknown": "未知"}


async def regions(window: Window) -> Report:
    """Members by region: the province of their latest mall shipping address (the region they stated),
    else their acquiring store, else unknown (whole registration months from the region snapshot)."""
    split = await _split(window)
    raw: list[dict[str, Any]] = []
    if split.snapshot:
        sql = _REGIONS_SNAPSHOT_SQL.format(store=window.store_clause("store_id"))
        raw += await queries.fetch_read(sql, **split.params)
    for since, until in split.edges:
        sql = _REGIONS_SQL.format(members=_members(window))
        raw += await queries.fetch_read(sql, **{**split.params, "since": since, "until": until})
    counts: dict[tuple[str, str], int] = {}
    for r in raw:
        key = (r["basis"], r["region"])
        counts[key] = counts.get(key, 0) + int(r["members"])
    everyone = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][1], item[0][0]))
    rows = [
        {"region": region or "未知", "basis": BASES[basis], "members": n, "share": rate(n, everyone)}
        for (basis, region), n in ordered
    ]
    columns = (
        Column("region", "地区", "text"),
        Column("basis", "依据", "text"),
        Column("members", "会员数"),
        Column("share", "占比", "rate"),
    )
    return Report(columns, rows, {"members": everyone, **split.fresh})


# Referral ranking ----------------------------------------------------------------------------------


async def referral_ranking(window: Window, limit: int = 20) -> Report:
    """The referrer ranking of `handlers.loyalty.referrals` over the range (referrers of the store)."""
    first, last = window.span()
    ranked = await referrals.ranking(
        window.merchant_id,
        since=window.moment(first),
        until=window.moment(last + timedelta(days=1)),
        limit=min(limit, referrals.MAX_RANKING),
        store_id=window.store_id,
        replica=True,
    )
    rows = [
        {
            "rank": i,
            "member_code": e.member_code,
            "name": e.name,
            "referrals": e.referrals,
            "points": e.points,
        }
        for i, e in enumerate(ranked, 1)
    ]
    columns = (
        Column("rank", "排名"),
        Column("member_code", "会员号", "text"),
        Column("name", "姓名", "text"),
        Column("referrals", "推荐人数"),
        Column("points", "推荐积分", "points"),
    )
    return Report(columns, rows, {"first": first, "last": last})


# Churn warning -------------------------------------------------------------------------------------

_CHURN_TIERS_SQL = """
SELECT t.tier_code, count(*) AS members, COALESCE(sum(m.lifetime_spend_fen), 0) AS spend_fen
  FROM member m LEFT JOIN member_tier t ON t.member_id = m.id
 WHERE {members} AND COALESCE(m.last_visit_at, m.registered_at) < :cutoff
 GROUP BY t.tier_code
"""
_CHURN_SNAPSHOT_SQL = """
SELECT tier_code, sum(members)::bigint AS members, sum(spend_fen)::bigint AS spend_fen
  FROM member_visit_snapshot
 WHERE merchant_id = :merchant AND day < :cutoff_day AND {store}
 GROUP BY tier_code
"""
_CHURN_LIST_SQL = """
SELECT m.code, m.name, t.tier_code, m.last_visit_at, m.lifetime_spend_fen, m.registered_at
  FROM member m LEFT JOIN member_tier t ON t.member_id = m.id
 WHERE {members} AND COALESCE(m.last_visit_at, m.registered_at) < :cutoff AND m.lifetime_spend_fen > 0
 ORDER BY {spend} DESC, m.id
 LIMIT :limit
"""
# One store: its churned members through `member_store_churn`, then sorted (`+ 0` keeps the planner from
# walking every member of the merchant by spend, where the churned of one store are few and far between).
_SPEND = {True: "m.lifetime_spend_fen", False: "m.lifetime_spend_fen + 0"}


async def churn(window: Window, days: int = 90, limit: int = 100, *, now: datetime | None = None) -> Report:
    """Members with no visit (till purchase or check-in; never visited: since registering) on the last
    `days` merchant-local days, today included: how many per tier in the summary (every member: from the
    visit snapshot when there is one), and the `limit` who spent most, with tier, last visit and spend."""
    cutoff_day = window.today - timedelta(days=days - 1)
    params = _snapshot_params(
        window, cutoff=window.moment(cutoff_day), cutoff_day=cutoff_day, limit=min(limit, MAX_LIST)
    )
    _, ladder = await loyalty_config.current_tiers(window.merchant_id)
    base = min(ladder, key=lambda tier: tier.rank).code
    names = {tier.code: tier.name for tier in ladder}
    by_tier: dict[str, dict[str, Any]] = {}
    state = await queries.fetch_read(_SNAPSHOT_STATE_SQL, merchant=window.merchant_id)
    if state and window.date_from is None and window.date_to is None:
        counted = await queries.fetch_read(
            _CHURN_SNAPSHOT_SQL.format(store=window.store_clause("store_id")), **params
        )
    else:
        counted = await queries.fetch_read(_CHURN_TIERS_SQL.format(members=_members(window)), **params)
    for row in counted:
        code = row["tier_code"] or base
        entry = by_tier.setdefault(code, {"tier_code": code, "tier_name": names.get(code, code), "members": 0,
                                          "spend_fen": 0})  # fmt: skip
        entry["members"] += int(row["members"])
        entry["spend_fen"] += int(row["spend_fen"])
    sql = _CHURN_LIST_SQL.format(members=_members(window), spend=_SPEND[window.store_id is None])
    raw = await queries.fetch_read(sql, **params)
    rows = [
        {
            "member_code": r["code"],
            "name": r["name"],
            "tier_name": names.get(r["tier_code"] or base, r["tier_code"]),
            "last_visit_at": r["last_visit_at"],
            "days_away": ((now or datetime.now(UTC)) - (r["last_visit_at"] or r["registered_at"])).days,
            "lifetime_spend_fen": int(r["lifetime_spend_fen"]),
        }
        for r in raw
    ]
    columns = (
        Column("member_code", "会员号", "text"),
        Column("name", "姓名", "text"),
        Column("tier_name", "等级", "text"),
        Column("last_visit_at", "最近到店", "datetime"),
        Column("days_away", "未到店天数", "days"),
        Column("lifetime_spend_fen", "累计消费", "fen"),
    )
    tiers_list = sorted(by_tier.values(), key=lambda e: (-e["members"], e["tier_code"]))
    summary = {"days": days, "members": sum(e["members"] for e in tiers_list), "by_tier": tiers_list}
    if state:
        summary["snapshot_at"] = state[0]["refreshed_at"]
    return Report(columns, rows, summary)


# Consumption-cycle warning -------------------------------------------------------------------------

_CYCLE_WHERE = """
s.merchant_id = :merchant AND s.last_at >= :recent AND s.due_at < :now AND s.purchases >= :min_purchases
AND s.last_at + make_interval(secs => s.median_days * 86400 * (1 + :overdue / 100.0)) < :now AND {store}
AND {members}
"""
# Every member: erased ones left out through the (few) erased members' ids, not a join of every member.
_NOT_ERASED = (
    "s.member_id NOT IN (SELECT e.id FROM member e"
    " WHERE e.merchant_id = :merchant AND e.anonymized_at IS NOT NULL)"
)
_REGISTERED = (
    "s.member_id IN (SELECT m.id FROM member m WHERE m.merchant_id = :merchant AND m.anonymized_at IS NULL"
    " AND m.registered_at >= :since AND m.registered_at < :until)"
)
# One scan: the count of every match rides along the top `limit` rows (a window over the matches).
_CYCLE_LIST_SQL = """
SELECT m.code, m.name, top.purchases, top.last_at, top.median_days, top.spend_fen, top.total
  FROM (SELECT s.member_id, s.purchases, s.last_at, s.median_days, s.spend_fen, count(*) OVER () AS total
          FROM member_stats s
         WHERE {where}
         ORDER BY s.spend_fen DESC, s.member_id
         LIMIT :limit) top
  JOIN member m ON m.id = top.member_id
 ORDER BY top.spend_fen DESC, top.member_id
"""


async def cycle(
    window: Window,
    overdue_pct: int = 50,
    min_purchases: int = 3,
    limit: int = 100,
    within_days: int = 180,
    *,
    now: datetime | None = None,
) -> Report:
    """Members whose time since their last purchase passed their own median interval between purchases
    by more than `overdue_pct`% (members with at least `min_purchases` purchases), most valuable first —
    among those who bought in the last `within_days` days: a member gone longer is the churn warning's."""
    at = now or datetime.now(UTC)
    params = _snapshot_params(
        window,
        now=at,
        recent=at - timedelta(days=within_days),
        overdue=overdue_pct,
        min_purchases=max(min_purchases, 2),
        limit=min(limit, MAX_LIST),
    )
    members = _NOT_ERASED if window.date_from is None and window.date_to is None else _REGISTERED
    where = _CYCLE_WHERE.format(store=window.store_clause("s.store_id"), members=members)
    raw = await queries.fetch_read(_CYCLE_LIST_SQL.format(where=where), **params)
    rows = [
        {
            "member_code": r["code"],
            "name": r["name"],
            "purchases": r["purchases"],
            "median_days": round(float(r["median_days"]), 1),
            "last_purchase_at": r["last_at"],
            "days_since": round((at - r["last_at"]).total_seconds() / 86400, 1),
            "overdue_pct": round(
                ((at - r["last_at"]).total_seconds() / 86400 / float(r["median_days"]) - 1) * 100
            )
            if r["median_days"]
            else None,
            "spend_fen": int(r["spend_fen"]),
        }
        for r in raw
    ]
    columns = (
        Column("member_code", "会员号", "text"),
        Column("name", "姓名", "text"),
        Column("purchases", "消费次数"),
        Column("median_days", "平时间隔天数", "days"),
        Column("last_purchase_at", "最近消费", "datetime"),
        Column("days_since", "距今天数", "days"),
        Column("overdue_pct", "超出比例%"),
        Column("spend_fen", "累计消费", "fen"),
    )
    summary = {
        "overdue_pct": overdue_pct,
        "within_days": within_days,
        "members": int(raw[0]["total"]) if raw else 0,
    }
    return Report(columns, rows, summary)


# Cohorts -------------------------------------------------------------------------------------------

_COHORT_SQL = """
SELECT month, sum(members)::bigint AS members, sum(buyers)::bigint AS buyers,
       sum(repeaters)::bigint AS repeaters, sum(spend_fen)::bigint AS spend_fen
  FROM member_cohort
 WHERE merchant_id = :merchant AND month >= :first AND month <= :last AND {store}
 GROUP BY month
"""


async def cohorts(window: Window) -> Report:
    """Per registration month (default: the last 12): members, buyers, repeat buyers (2+ purchases),
    repeat-purchase rate (repeat buyers / buyers), cash spent and lifetime value (cash / member)."""
    first, last = window.span(default_days=365)
    months = periods(first, last, "month")
    raw = await queries.fetch_read(
        _COHORT_SQL.format(store=window.store_clause("store_id")), **window.params(first=months[0], last=last)
    )
    found = {r["month"]: r for r in raw}
    rows: list[dict[str, Any]] = []
    for month in months:
        r = found.get(month, {})
        members, buyers = int(r.get("members", 0)), int(r.get("buyers", 0))
        repeaters, spend = int(r.get("repeaters", 0)), int(r.get("spend_fen", 0))
        rows.append(
            {
                "cohort": period_label(month, "month"),
                "members": members,
                "buyers": buyers,
                "repeaters": repeaters,
                "buyer_rate": rate(buyers, members),
                "repeat_rate": rate(repeaters, buyers),
                "spend_fen": spend,
                "ltv_fen": spend // members if members else 0,
            }
        )
    columns = (
        Column("cohort", "注册月份", "text"),
        Column("members", "会员数"),
        Column("buyers", "消费会员数"),
        Column("repeaters", "复购会员数"),
        Column("buyer_rate", "消费率", "rate"),
        Column("repeat_rate", "复购率", "rate"),
        Column("spend_fen", "累计消费", "fen"),
        Column("ltv_fen", "人均价值", "fen"),
    )
    return Report(columns, rows, {"first": months[0], "last": last})
