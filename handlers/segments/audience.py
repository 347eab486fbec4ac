"""A segment's audience: how many members, a masked sample, and every member id in keyset batches.

The public interface other packages (campaigns) use:

- `count(merchant_id, expression)` — how many members the expression selects now;
- `iter_member_ids(merchant_id, expression, batch)` — their ids in ascending order, `batch` at a time,
  each batch one keyset query on `member.id` (never all loaded at once); erased members excluded;
- `load_expression(merchant_id, segment_id)` — a saved segment's expression (404 when there is none).

Expressions are validated and compiled by `handlers.segments.expression` (a 400 naming the path) into
one WHERE over `member_facts` (one narrow row per live member, kept by triggers in the writing
transaction): the count, the sample and the batches read the same rows, so they always agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from handlers.core import queries
from handlers.core.errors import NotFound, ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.members.profile import mask_phone
from handlers.segments.expression import MEMBER_ID as MEMBER_ID  # the selected member's id column
from handlers.segments.expression import Compiled, compile_expression
from models.merchant import Merchant
from models.tag import Segment

MAX_BATCH = 10_000
MAX_SAMPLE = 50


@dataclass(frozen=True, slots=True)
class SampleMember:
    id: int
    code: str
    name: str  # masked: the first character, then one * per character
    phone: str  # masked: 138****5678


def segment_not_found() -> NotFound:
    return NotFound("人群不存在", field="segment_id")


async def compile_for(merchant_id: int, expression: object, *, now: datetime | None = None) -> Compiled:
    """The expression compiled against the merchant at `now` (default: the current time)."""
    merchant = await Merchant.get_or_none(id=merchant_id)
    if merchant is None:
        raise NotFound("商户不存在", field="merchant_id")
    moment = now or datetime.now(UTC)
    today: date = moment.astimezone(ZoneInfo(merchant.timezone)).date()
    _, ladder = await loyalty_config.current_tiers(merchant_id)
    return await compile_expression(
        merchant_id,
        expression,
        now=moment,
        today=today,
        base_tier=ladder[0].code,
        tiers={tier.code for tier in ladder},
    )


async def count(merchant_id: int, expression: dict[str, Any]) -> int:
    """How many (not erased) members the expression selects now."""
    compiled = await compile_for(merchant_id, expression)
    sql = f"SELECT count(*) AS n FROM {compiled.from_clause()}\n WHERE {compiled.where}"  # noqa: S608 - compiled, values bound
    return int((await queries.fetch_one(sql, **compiled.params))["n"])


async def iter_member_ids(
    merchant_id: int, expression: dict[str, Any], batch: int = 1000
) -> AsyncIterator[list[int]]:
    """The selected members' ids, ascending, `batch` at a time (keyset on `member.id`). The expression is
    compiled once, at the start: relative dates (age, days since) are as of then."""
    if not 1 <= batch <= MAX_BATCH:
        raise ValidationError(f"batch 须在 1–{MAX_BATCH} 之间", field="batch")
    compiled = await compile_for(merchant_id, expression)
    sql = (
        f"SELECT {MEMBER_ID} AS id FROM {compiled.from_clause()}\n WHERE {compiled.where}"  # noqa: S608 - compiled, values bound
        f" AND {MEMBER_ID} > :after_id\n ORDER BY {MEMBER_ID} LIMIT :batch_size"
    )
    after = 0
    while True:
        rows = await queries.fetch_rows(sql, **compiled.params, after_id=after, batch_size=batch)
        ids = [int(row["id"]) for row in rows]
        if ids:
            yield ids
        if len(ids) < batch:
            return
        after = ids[-1]


async def load_expression(merchant_id: int, segment_id: int) -> dict[str, Any]:
    """The saved segment's expression; NotFound (404) when the merchant has no such segment."""
    segment = await Segment.get_or_none(id=segment_id, merchant_id=merchant_id)
    if segment is None:
        raise segment_not_found()
    expression: dict[str, Any] = segment.expression
    return expression


def mask_name(name: str | None) -> str:
    return f"{name[0]}{'*' * (len(name) - 1)}" if name else ""


async def preview(
    merchant_id: int, expression: dict[str, Any], *, sample: int = 10
) -> tuple[int, list[SampleMember]]:
    """The audience count and the first `sample` members (lowest ids), masked."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise ValidationError(f"sample 须在 0–{MAX_SAMPLE} 之间", field="sample")
    compiled = await compile_for(merchant_id, expression)
    where = f"\n WHERE {compiled.where}"
    counted = f"SELECT count(*) AS n FROM {compiled.from_clause()}{where}"  # noqa: S608 - compiled, values bound
    total = int((await queries.fetch_one(counted, **compiled.params))["n"])
    rows = []
    if sample and total:
        source = f"FROM {compiled.from_clause()}\n  JOIN member m ON m.id = {MEMBER_ID}{where}"
        rows = await queries.fetch_rows(
            f"SELECT m.id, m.code, m.name, m.phone {source}\n ORDER BY {MEMBER_ID} LIMIT :sample_size",
            **compiled.params,
            sample_size=sample,
        )
    members = [
        SampleMember(id=int(r["id"]), code=r["code"], name=mask_name(r["name"]), phone=mask_phone(r["phone"]))
        for r in rows
    ]
    return total, members
