"""Small query helpers shared by use cases."""

from __future__ import annotations

from typing import Any

from tortoise.functions import Sum


async def sum_of(query: Any, column: str) -> int:
    """SUM(column) over a tortoise queryset, 0 when it matches no rows."""
    rows = await query.annotate(total=Sum(column)).values_list("total", flat=True)
    return int(rows[0] or 0) if rows else 0
