"""The console's dashboard: today / 7 / 30-day figures and the 30-day trend chart (`handlers.overview`),
and from the analytics API (its handlers, store-scoped like the API): the points liability in yuan, the
churn, credit and consumption-cycle warnings linking to their member lists, and low-stock mall items
(each item's own threshold, 库存预警)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from handlers.overview import kpis
from webhooks.console.analytics import endpoint
from webhooks.console.base import api, page, render
from webhooks.console.security import Console

routes = web.RouteTableDef()
CHURN_DAYS = 90


async def analysis(request: web.Request, console: Console, path: str, **params: Any) -> Any:
    """One analysis of the analytics API, through its endpoint's handler and query model."""
    found = endpoint(request, f"/api/admin/analytics/{path}")
    assert found.query is not None
    return await api(request, console, found.handler, query=found.query(**params))


@routes.get("/admin/")
@page()
async def dashboard(request: web.Request, console: Console) -> web.StreamResponse:
    board = await kpis.dashboard(console.merchant, now=datetime.now(UTC))
    chart = {
        "days": [day.day.strftime("%m-%d") for day in board.trend],
        "revenue": [day.revenue_fen / 100 for day in board.trend],
        "members": [day.new_members for day in board.trend],
    }
    stock = await analysis(request, console, "sales/stock", limit=50)
    context = {
        "board": board,
        "chart": json.dumps(chart),
        "liability": (await analysis(request, console, "points/liability")).summary,
        "churn": (await analysis(request, console, "members/churn", days=CHURN_DAYS, limit=1)).summary,
        "churn_days": CHURN_DAYS,
        "credit": (await analysis(request, console, "members/credit", limit=1)).summary,
        "cycle": (await analysis(request, console, "members/cycle", limit=1)).summary,
        "low_stock": [row for row in stock.rows if row.get("low")],
    }
    return render(request, "dashboard.html", console, context, section="dashboard")
