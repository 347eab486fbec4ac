"""The analyses of the back office (issue 11 §5): members, sales and the points economy.

Each analysis is two endpoints: `GET /api/admin/analytics/<name>` answers JSON (`columns`, `rows`,
`summary`) and `GET /api/admin/analytics/<name>/export?format=csv|xlsx` the same rows as a file (money
in yuan, times merchant-local; audit-logged as `analytics.export`). Every one takes `date_from` /
`date_to` (merchant-local days, both included) and `store_id`; a manager sees their own store only
(`handlers.staff.scope`), an admin every store or the one named. All read the read connection
(DATABASE_READ_URL). The mall's low-stock threshold (库存预警) is set here too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field, create_model

from handlers.analytics import credit, members, points, sales, thresholds
from handlers.analytics.report import Report, Window, header, lines
from handlers.core import audit_log, sheets
from handlers.staff.scope import scope_of
from webhooks.api import Call, In, IntId, Out, Routes
from webhooks.auth import MANAGER

log = logging.getLogger(__name__)
routes = Routes("admin_analytics")
Day = Annotated[
    date,
    Field(
        ge=date(2000, 1, 1),
        le=date(2099, 12, 31),
        description="merchant-local day, e.g. 2024-05-01 (ends included)",
    ),
]
Format = Literal["csv", "xlsx"]
Limit = Annotated[int, Field(ge=1, le=500, description="rows at most")]


class RangeQuery(In):
    date_from: Day | None = None
    date_to: Day | None = None
    store_id: Annotated[IntId | None, Field(description="one store (a manager: their own, always)")] = None


class GrainQuery(RangeQuery):
    grain: Literal["day", "week", "month", "quarter", "year"] = "day"


class LimitQuery(RangeQuery):
    limit: Limit = 50


class ProductQuery(LimitQuery):
    sort: Literal["revenue", "qty", "profit"] = "revenue"


class ChurnQuery(LimitQuery):
    days: Annotated[int, Field(ge=1, le=3650, description="no visit in this many days")] = 90


class CycleQuery(LimitQuery):
    overdue_pct: Annotated[
        int, Field(ge=0, le=10_000, description="the usual interval passed by more than this %")
    ] = 50
    min_purchases: Annotated[
        int, Field(ge=3, le=1000, description="members with at least this many purchases")
    ] = 3
    within_days: Annotated[
        int, Field(ge=1, le=3650, description="members who bought in this many days (longer: churn)")
    ] = 180


class DeliveryQuery(LimitQuery):
    ship_days: Annotated[int, Field(ge=0, le=60, description="an order is to ship within this many days")] = 2
    deliver_days: Annotated[int, Field(ge=1, le=90, description="a parcel arrives within this many days")] = 7


class ColumnOut(Out):
    key: str
    title: str
    unit: str = Field(description="text, count, fen, points, rate (0–1), days, date, datetime or bool")


class ReportOut(Out):
    columns: list[ColumnOut]
    rows: list[dict[str, Any]] = Field(description="one object per row, keyed by the columns' keys")
    summary: dict[str, Any] = Field(description="totals and the range the analysis covered")


@dataclass(frozen=True, slots=True)
class Analysis:
    path: str
    name: str
    title: str  # the export's sheet and file name
    query: type[RangeQuery]
    run: Callable[..., Awaitable[Report]]
    doc: str


ANALYSES = (
    Analysis("members/tiers", "member_tiers", "等级分布", RangeQuery, members.tiers,
             "Members per tier (members registered in the range; none given: all)."),
    Analysis("members/new", "new_members", "新会员", GrainQuery, members.new_members,
             "New members per day / week / month / quarter / year and by source."),
    Analysis("members/staff", "members_by_staff", "员工拉新", LimitQuery, members.by_staff,
             "Members brought in by each staff member's QR code."),
    Analysis("members/gender-age", "member_gender_age", "性别年龄", RangeQuery, members.gender_age,
             "Members by age band and gender."),
    Analysis("members/regions", "member_regions", "地区分布", RangeQuery, members.regions,
             "Members by region (latest shipping address's province, else acquiring store)."),
    Analysis("members/referrals", "member_referrals", "推荐排行", LimitQuery, members.referral_ranking,
             "Referrers ranked by level-1 referrals awarded in the range."),
    Analysis("members/churn", "member_churn", "流失预警", ChurnQuery, members.churn,
             "Churn warning: no visit in `days` days, per tier and the most valuable members."),
    Analysis("members/credit", "member_credit", "信用预警", LimitQuery, credit.credit_warning,
             "Credit warning: members with overdue credit, as of the end of `date_to` (default now)."),
    Analysis("members/cycle", "member_cycle", "消费周期预警", CycleQuery, members.cycle,
             "Consumption-cycle warning: a member's own usual interval passed by `overdue_pct`%."),
    Analysis("members/cohorts", "member_cohorts", "会员价值", RangeQuery, members.cohorts,
             "Lifetime value and repeat-purchase rate per registration month."),
    Analysis("sales/categories", "sales_categories", "品类销售", RangeQuery, sales.by_category,
             "Revenue, cost, profit and volume per product category."),
    Analysis("sales/trend", "sales_trend", "销售趋势", GrainQuery, sales.trend,
             "Sales per day / week / month / quarter / year."),
    Analysis("sales/staff", "sales_staff", "员工业绩", LimitQuery, sales.staff_ranking,
             "Staff ranked by cash taken at the till."),
    Analysis("sales/products", "sales_products", "商品排行", ProductQuery, sales.product_ranking,
             "Products ranked by revenue, quantity or profit."),
    Analysis("sales/stock", "mall_stock", "库存预警", LimitQuery, sales.stock_ranking,
             "Mall stock ranking: items at their low-stock threshold first (库存预警)."),
    Analysis("sales/deliveries", "mall_deliveries", "发货提醒", DeliveryQuery, sales.delivery_reminders,
             "Delivery reminders for shipped mall orders: what is due, by when, which staff."),
    Analysis("points/periods", "points_periods", "积分收支", GrainQuery, points.by_period,
             "Points issued, redeemed and expired per period."),
    Analysis("points/sources", "points_sources", "积分来源", RangeQuery, points.by_source,
             "Points in and out per source (posting kind)."),
    Analysis("points/liability", "points_liability", "积分负债", RangeQuery, points.liability,
             "Outstanding points in yuan, redemption and breakage rates, pool budgets used."),
)  # fmt: skip
RANGE_FIELDS = {*RangeQuery.model_fields, "format"}


def _window(call: Call[Any, Any], query: RangeQuery) -> Window:
    store_id = scope_of(call.staff).store_filter(query.store_id)
    return Window(
        merchant_id=call.merchant.id,
        timezone=call.merchant.timezone,
        today=datetime.now(ZoneInfo(call.merchant.timezone)).date(),
        date_from=query.date_from,
        date_to=query.date_to,
        store_id=store_id,
    )


async def _report(spec: Analysis, call: Call[Any, Any]) -> tuple[Window, Report]:
    query: RangeQuery = call.query
    window = _window(call, query)
    return window, await spec.run(window, **query.model_dump(exclude=RANGE_FIELDS))


def _out(report: Report) -> ReportOut:
    return ReportOut(
        columns=[ColumnOut(key=c.key, title=c.title, unit=c.unit) for c in report.columns],
        rows=report.rows,
        summary=report.summary,
    )


async def _export(spec: Analysis, call: Call[Any, Any]) -> web.StreamResponse:
    window, report = await _report(spec, call)
    kind: Literal["csv", "xlsx"] = call.query.format
    await audit_log.record(
        call.merchant.id,
        f"staff:{call.staff.id}",
        "analytics.export",
        spec.path,
        format=kind,
        query=call.query.model_dump(mode="json", exclude={"format"}, exclude_none=True),
        store_id=window.store_id,
    )
    stamp = datetime.now(ZoneInfo(call.merchant.timezone)).strftime("%Y%m%d-%H%M")
    response = web.StreamResponse(
        headers={
            "Content-Type": sheets.MEDIA_TYPES[kind],
            "Content-Disposition": f'attachment; filename="{spec.name}-{stamp}.{kind}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(call.request)
    rows = lines(report, call.merchant.timezone)
    if kind == "csv":
        await sheets.write_csv(header(report), rows, response.write)
    else:
        await sheets.write_xlsx(header(report), rows, response.write, title=spec.title)
    await response.write_eof()
    return response


def _register(spec: Analysis) -> None:
    async def analysis(call: Call[None, None]) -> ReportOut:
        return _out((await _report(spec, call))[1])

    async def export(call: Call[None, None]) -> web.StreamResponse:
        return await _export(spec, call)

    analysis.__name__ = analysis.__qualname__ = spec.name
    analysis.__doc__ = spec.doc
    export.__name__ = export.__qualname__ = f"{spec.name}_export"
    export.__doc__ = f"{spec.doc.rstrip('.')} — as CSV or XLSX (?format=)."
    exported = create_model(
        f"{spec.query.__name__}Export_{spec.name}",
        __base__=spec.query,
        format=(Format, "csv"),
    )
    path = f"/api/admin/analytics/{spec.path}"
    routes.get(path, query=spec.query, response=ReportOut, auth=MANAGER, errors=(400, 403))(analysis)
    routes.get(
        f"{path}/export",
        query=exported,
        media=(sheets.MEDIA_TYPES["csv"], sheets.MEDIA_TYPES["xlsx"]),
        auth=MANAGER,
        errors=(400, 403),
    )(export)


for _spec in ANALYSES:
    _register(_spec)


# 库存预警: the low-stock threshold ----------------------------------------------------------------


class ItemPath(In):
    item_id: IntId


class ThresholdIn(In):
    threshold: Annotated[
        int | None,
        Field(ge=0, le=thresholds.MAX_THRESHOLD, description="flag at or below this stock; null: never"),
    ]


class ThresholdOut(Out):
    item_id: int
    stock: int
    low_stock_threshold: int | None
    low: bool


@routes.put(
    "/api/admin/mall/items/{item_id}/low-stock",
    path_model=ItemPath,
    body=ThresholdIn,
    response=ThresholdOut,
    auth=MANAGER,
    errors=(400, 404),
)
async def set_low_stock(call: Call[ThresholdIn, ItemPath]) -> ThresholdOut:
    """Set or clear a mall item's low-stock threshold (库存预警); audit-logged."""
    item = await thresholds.set_low_stock(
        call.merchant.id, call.path.item_id, call.body.threshold, actor=f"staff:{call.staff.id}"
    )
    threshold = item.low_stock_threshold
    return ThresholdOut(
        item_id=item.id,
        stock=item.stock,
        low_stock_threshold=threshold,
        low=threshold is not None and item.stock <= threshold,
    )
