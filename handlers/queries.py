"""Small query helpers shared by use cases."""

from __future__ import annotations

from typing import Any, TypeVar

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
