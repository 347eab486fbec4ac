"""The credit warning (信用预警): members with overdue credit, as `handlers.credit.overdue` answers it
(charges not repaid within the merchant's `overdue_days`, repayments paying the oldest first).

As of the end of `date_to` (merchant-local; default: now), so a day ahead answers what will be overdue
by then if nothing is repaid; the store is the member's acquiring store. It reads the primary: the
credit module's query takes no connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.analytics.report import Column, Report, Window
from handlers.core import queries
from handlers.core.errors import NotFound
from handlers.credit import overdue as credit_overdue
from handlers.members.profile import mask_phone
from handlers.staff.scope import Scope
from models.merchant import Merchant


async def credit_warning(window: Window, limit: int = 100, *, now: datetime | None = None) -> Report:
    """Members with overdue credit, the oldest due date first: overdue amount, days, owed and limit."""
    merchant = await queries.first(Merchant, id=window.merchant_id)
    if merchant is None:
        raise NotFound("商户不存在")
    as_of = (
        window.moment(window.date_to + timedelta(days=1)) if window.date_to else (now or datetime.now(UTC))
    )
    found = await credit_overdue.overdue(
        merchant, as_of, scope=Scope(window.merchant_id, window.store_id), store_id=window.store_id
    )
    rows = [
        {
            "member_code": o.member_code,
            "name": o.name,
            "phone": mask_phone(o.phone),
            "overdue_fen": o.overdue_fen,
            "oldest_due_at": o.oldest_due_at,
            "days_overdue": o.days_overdue,
            "owed_fen": o.owed_fen,
            "limit_fen": o.limit_fen,
        }
        for o in found[:limit]
    ]
    columns = (
        Column("member_code", "会员号", "text"),
        Column("name", "姓名", "text"),
        Column("phone", "手机号", "text"),
        Column("overdue_fen", "逾期金额", "fen"),
        Column("oldest_due_at", "最早到期", "datetime"),
        Column("days_overdue", "逾期天数", "days"),
        Column("owed_fen", "欠款", "fen"),
        Column("limit_fen", "信用额度", "fen"),
    )
    summary = {"as_of": as_of, "members": len(found), "overdue_fen": sum(o.overdue_fen for o in found)}
    return Report(columns, rows, summary)
