"""Console pages of the analyses (issue 11 §5): every analysis of the analytics API as a table, and a
chart where it runs over time, with its date range, store and own filters, and CSV/XLSX downloads.

The page for `members/churn` calls the handler of `GET /api/admin/analytics/members/churn` (found in the
endpoint registry) with that endpoint's query model, so filters are validated and store-scoped exactly
as the API does; the download links call the `…/export` endpoint's handler the same way.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handlers.core.errors import ErrorCode
from webhooks import admin_analytics
from webhooks.api import ENDPOINTS, ApiError, Endpoint
from webhooks.console.base import FormErrors, api, page, parse, present, render
from webhooks.console.security import Console

routes = web.RouteTableDef()
BY_PATH = {spec.path: spec for spec in admin_analytics.ANALYSES}
GROUPS = (("members/", "会员分析"), ("sales/", "销售分析"), ("points/", "积分经济"))
PARAM_LABELS = {
    "date_from": "开始日期",
    "date_to": "结束日期",
    "store_id": "门店编号",
    "grain": "粒度",
    "limit": "行数",
    "sort": "排序",
    "days": "未到店天数",
    "overdue_pct": "超出常规间隔（%）",
    "min_purchases": "最少消费次数",
    "within_days": "近多少天内消费过",
    "ship_days": "发货时限（天）",
    "deliver_days": "送达时限（天）",
}
GRAINS = {"day": "日", "week": "周", "month": "月", "quarter": "季度", "year": "年"}


def endpoint(request: web.Request, path: str) -> Endpoint:
    found = next((e for e in request.app[ENDPOINTS] if e.method == "GET" and e.path == path), None)
    if found is None:
        raise RuntimeError(f"no endpoint {path}")
    return found


def cell(value: Any, unit: str) -> str:
    """A report value as the merchant reads it: money in yuan, rates in %, dates as days."""
    if value is None:
        return "—"
    if unit == "fen" and isinstance(value, int):
        return f"{value / 100:,.2f}"
    if unit == "rate" and isinstance(value, int | float):
        return f"{value * 100:.1f}%"
    if unit == "bool":
        return "是" if value else "否"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def chart(report: Any) -> str | None:
    """A line chart's data when the first column is a period (date or text) and some are numbers."""
    if not report.rows or len(report.rows) < 2:
        return None
    first = report.columns[0]
    if first.unit not in ("date", "text"):
        return None
    numeric = [c for c in report.columns[1:] if c.unit in ("count", "fen", "points")][:3]
    if not numeric:
        return None
    days = [cell(row.get(first.key), first.unit) for row in report.rows]
    series = [
        {
            "name": c.title + ("（元）" if c.unit == "fen" else ""),
            "data": [(row.get(c.key) or 0) / (100 if c.unit == "fen" else 1) for row in report.rows],
        }
        for c in numeric
    ]
    return json.dumps({"days": days, "series": series}, ensure_ascii=False)


@routes.get("/admin/analytics")
@page()
async def analytics_index(request: web.Request, console: Console) -> web.StreamResponse:
    groups = [
        (label, [s for s in admin_analytics.ANALYSES if s.path.startswith(prefix)])
        for prefix, label in GROUPS
    ]
    return render(request, "analytics_index.html", console, {"groups": groups}, section="analytics")


@routes.get(r"/admin/analytics/{group:members|sales|points}/{name:[a-z-]+}")
@page()
async def analysis(request: web.Request, console: Console) -> web.StreamResponse:
    path = f"{request.match_info['group']}/{request.match_info['name']}"
    spec = BY_PATH.get(path)
    if spec is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "没有这个分析")
    found = endpoint(request, f"/api/admin/analytics/{path}")
    assert found.query is not None
    fields = [name for name in found.query.model_fields]
    values = present(request.query, *fields)
    errors: dict[str, str] = {}
    report = None
    try:
        query = parse(found.query, values)
        report = await api(request, console, found.handler, query=query)
    except FormErrors as exc:
        errors = exc.errors
    except ApiError as exc:
        errors = {exc.field or "form": exc.message}
    context = {
        "spec": spec,
        "fields": fields,
        "labels": PARAM_LABELS,
        "grains": GRAINS,
        "values": values,
        "errors": errors,
        "report": report,
        "cell": cell,
        "chart": chart(report) if report is not None else None,
        "export": {
            kind: f"/admin/analytics/{path}/export?{urlencode({**values, 'format': kind})}"
            for kind in ("csv", "xlsx")
        },
    }
    return render(
        request, "analysis.html", console, context, status=400 if errors else 200, section="analytics"
    )


@routes.get(r"/admin/analytics/{group:members|sales|points}/{name:[a-z-]+}/export")
@page()
async def analysis_export(request: web.Request, console: Console) -> web.StreamResponse:
    path = f"{request.match_info['group']}/{request.match_info['name']}"
    if path not in BY_PATH:
        raise ApiError(404, ErrorCode.NOT_FOUND, "没有这个分析")
    found = endpoint(request, f"/api/admin/analytics/{path}/export")
    assert found.query is not None
    query = parse(found.query, present(request.query, *found.query.model_fields))
    response: web.StreamResponse = await api(request, console, found.handler, query=query)
    return response
