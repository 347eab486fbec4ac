"""Small query helpers shared by use cases."""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Sum
from tortoise.models import Model

from handlers.core.errors import ErrorCode, NotFound

M = TypeVar("M", bound=Model)


async def sum_of(query: Any, column: str) -> int:
    """SUM(column) over a tortoise queryset, 0 when it matches no rows."""
    rows = await query.annotate(total=Sum(column)).values_list("total", flat=True)
    return int(rows[0] or 0) if rows else 0


_NAMED = re.compile(r"(?<!:):([A-Za-z_]\w*)")  # `:name`, not the `::type` of a cast


@functools.lru_cache(maxsize=256)
def _translated(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with `:name` placeholders as PostgreSQL's `$n`, and the parameter names in bind order."""
    order = tuple(dict.fromkeys(_NAMED.findall(sql)))
    return _NAMED.sub(lambda m: f"${order.index(m.group(1)) + 1}", sql), order


async def fetch_rows(sql: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of a hand-written statement, on the current connection (the open transaction, if any).

    For hot paths the ORM would need several round trips for. `:name` placeholders become `$n`;
    values are always bound, never interpolated.
    """
    text, order = _translated(sql)
    return list(await connections.get("default").execute_query_dict(text, [params[name] for name in order]))


_read: list[BaseDBAsyncClient] = []  # the replica's client, when the process has one


def use_read_client(client: BaseDBAsyncClient | None) -> None:
    """Make `client` (a streaming replica's, `models.read_client`) what analyses and exports read; None:
    the primary. Set by the app and the worker when DATABASE_READ_URL is set, for the process's life."""
    _read[:] = [client] if client is not None else []


def read_connection() -> BaseDBAsyncClient:
    """The connection analyses and exports read from: the replica's (DATABASE_READ_URL) when there is
    one, else the primary. Never for a transaction: a replica's rows are a moment behind."""
    if _read:
        return _read[0]
    client: BaseDBAsyncClient = connections.get("default")
    return client


async def fetch_read(sql: str, *, jit: bool = True, **params: Any) -> list[dict[str, Any]]:
    """`fetch_rows` on the read connection (`read_connection`), in a read-only transaction planned for
    its parameters every time: a statement prepared once and run with ranges of any length must not fall
    back on one generic plan (an analysis of a day and one of a year want different plans). `jit=False`:
    no JIT compilation for a statement whose estimated cost would make PostgreSQL compile it for longer
    than it runs."""
    text, order = _translated(sql)
    connection: Any
    async with read_connection().acquire_connection() as connection, connection.transaction(readonly=True):
        await connection.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        if not jit:
            await connection.execute("SET LOCAL jit = off")
        rows = await connection.fetch(text, *[params[name] for name in order])
    return [dict(row) for row in rows]


async def fetch_one(sql: str, **params: Any) -> dict[str, Any]:
    """The first row of a hand-written query (see `fetch_rows`)."""
    return (await fetch_rows(sql, **params))[0]


async def fetch_model(model: type[M], sql: str, **params: Any) -> M | None:
    """The first row of a hand-written `SELECT *` of `model`'s table as a model instance, or None.

    For the hottest lookups, where building the query costs more than running it."""
    rows = await fetch_rows(sql, **params)
    return as_model(model, rows[0]) if rows else None


async def member_row(model: type[M], sql: str, merchant_id: int, member_id: int) -> M:
    """The member's row of `model` returned by `sql` (`:merchant`, `:member`; e.g. a function that locks
    or opens an account), or 404 member_not_found when it returns none."""
    rows = await fetch_rows(sql, merchant=merchant_id, member=member_id)
    if not rows:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    return as_model(model, rows[0])


def as_model(model: type[M], row: dict[str, Any]) -> M:
    """A model instance from a row holding all of its table's columns (other keys are ignored)."""
    return model._init_from_db(**row)


@functools.lru_cache(maxsize=256)
def _first_sql(table: str, columns: tuple[str, ...]) -> str:
    where = " AND ".join(f'"{c}" = :{c}' for c in columns)
    return f'SELECT * FROM "{table}" WHERE {where} LIMIT 1'  # noqa: S608 - names checked in `first`


async def first(model: type[M], **where: Any) -> M | None:
    """`model.get_or_none(**where)` for equality filters on columns, without the query builder (a lookup
    every request makes: the session's staff, merchant or member)."""
    unknown = set(where) - set(model._meta.db_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no columns {sorted(unknown)}")
    return await fetch_model(model, _first_sql(model._meta.db_table, tuple(where)), **where)
