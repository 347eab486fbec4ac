"""Small query helpers shared by use cases."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.models import Model
from tortoise.transactions import in_transaction

from handlers.errors import ErrorCode, NotFound
from models.member import Member

M = TypeVar("M", bound=Model)


async def sum_of(query: Any, column: str) -> int:
    """SUM(column) over a tortoise queryset, 0 when it matches no rows."""
    rows = await query.annotate(total=Sum(column)).values_list("total", flat=True)
    return int(rows[0] or 0) if rows else 0


async def lock_member_row(model: type[M], merchant_id: int, member_id: int) -> M:
    """The member's one row of `model` (an account keyed by `member_id`), locked FOR UPDATE in the current
    transaction and created if missing. A lost creation race is absorbed by a savepoint, so it never
    aborts the caller's transaction; a member of another merchant, or none, is 404 member_not_found."""
    row = await model.select_for_update().get_or_none(member_id=member_id)
    if row is None:
        if not await Member.exists(id=member_id, merchant_id=merchant_id):
            raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
        try:
            async with in_transaction():
                await model.create(merchant_id=merchant_id, member_id=member_id)
        except IntegrityError:
            pass
        row = await model.select_for_update().get(member_id=member_id)
    if row.merchant_id != merchant_id:  # type: ignore[attr-defined]
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    return row


_NAMED = re.compile(r":([a-z_]+)\b")


async def fetch_one(sql: str, **params: Any) -> dict[str, Any]:
    """One row of a hand-written query, on the current connection (the open transaction, if any).

    For hot aggregates the ORM would need several round trips for. `:name` placeholders become the
    dialect's own ($1 for PostgreSQL, ? for SQLite); values are always bound, never interpolated.
    """
    connection = connections.get("default")
    # Stored times are UTC; SQLite compares them as text, so every bound time must be UTC too.
    params = {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in params.items()}
    names = _NAMED.findall(sql)
    if connection.capabilities.dialect == "postgres":
        order = list(dict.fromkeys(names))
        text = _NAMED.sub(lambda m: f"${order.index(m.group(1)) + 1}", sql)
        values = [params[name] for name in order]
    else:
        text, values = _NAMED.sub("?", sql), [params[name] for name in names]
    rows = await connection.execute_query_dict(text, values)
    return rows[0]
