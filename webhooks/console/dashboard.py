"""The console's dashboard: today / 7 / 30-day figures, the 30-day trend chart, low-stock mall items."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web

from handlers.overview import kpis
from webhooks import credit
from webhooks.console.base import api, page, render
from webhooks.console.security import Console

routes = web.RouteTableDef()


@routes.get("/admin/")
@page()
async def dashboard(request: web.Request, console: Console) -> web.StreamResponse:
    board = await kpis.dashboard(console.merchant, now=datetime.now(UTC))
    chart = {
        "days": [day.day.strftime("%m-%d") for day in board.trend],
        "revenue": [day.revenue_fen / 100 for day in board.trend],
        "members": [day.new_members for day in board.trend],
    }
    overdue = await api(request, console, credit.list_overdue, query=credit.OverdueQuery())
    context = {"board": board, "chart": json.dumps(chart), "low_stock_at": kpis.LOW_STOCK, "overdue": overdue}
    return render(request, "dashboard.html", console, context, section="dashboard")
