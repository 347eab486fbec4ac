"""Exporting a member search as CSV or XLSX, streamed: rows are fetched in keyset batches
(`search.batches`, on the read connection) and written as they come by `handlers.core.sheets`'s
writers, so memory does not grow with the result.

The phone is masked unless the export asks for the full number (which the HTTP layer allows admins
only). Every export is audit-logged (`members.export`: who, when, the format, the filters with any
phone in them masked, and whether full phones were included) before the first row is written. Text
cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) are prefixed with `'`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from handlers.core import audit_log, sheets
from handlers.directory import search
from handlers.members.profile import mask_phone, parse_phone
from models.merchant import Merchant

Format = Literal["csv", "xlsx"]
Write = sheets.Write
EXPORT_BATCH = 500
CENT = Decimal("0.01")
MEDIA_TYPES = sheets.MEDIA_TYPES
HEADER = [
    "会员号",
    "原会员号",
    "姓名",
    "手机号",
    "性别",
    "生日",
    "等级",
    "积分",
    "累计消费（元）",
    "注册时间",
    "最近到店",
    "来源",
    "门店",
    "状态",
]
GENDERS = {"male": "男", "female": "女", "undisclosed": "保密"}
SOURCES = {
    "oa_subscribe": "关注公众号",
    "oa_referral": "推荐关注",
    "oa_staff": "员工推广",
    "mini_program": "小程序",
    "staff": "员工录入",
    "import": "导入",
}
_text = sheets.safe_text


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else ""


def cells(row: search.Row, *, full_phone: bool, zone: ZoneInfo) -> list[Any]:
    """One member as a line of the export, in `HEADER`'s order."""
    phone = (row.phone or "") if full_phone else mask_phone(row.phone)
    return [
        row.code,
        _text(row.external_id),
        _text(row.name),
        phone,
        GENDERS.get(row.gender or "", ""),
        row.birthday.isoformat() if row.birthday else "",
        _text(row.tier_name),
        row.points,
        (Decimal(row.lifetime_spend_fen) / 100).quantize(CENT),
        _local(row.registered_at, zone),
        _local(row.last_visit_at, zone),
        SOURCES.get(row.source, row.source),
        _text(row.store_name),
        "已冻结" if row.blocked else "正常",
    ]


def _filters_for_log(filters: search.Filters) -> dict[str, Any]:
    logged: dict[str, Any] = {}
    for name, value in dataclasses.asdict(filters).items():
        if value is None:
            continue
        if name == "phone":
            value = mask_phone(parse_phone(value))
        logged[name] = value.isoformat() if isinstance(value, date) else value
    return logged


async def record(
    merchant: Merchant,
    actor: str,
    *,
    kind: Format,
    filters: search.Filters,
    found: search.Plan,
    full_phone: bool,
) -> None:
    """The audit row of one export (written before it starts)."""
    await audit_log.record(
        merchant.id,
        actor,
        "members.export",
        "members",
        format=kind,
        full_phone=full_phone,
        filters=_filters_for_log(filters),
        sort=f"{found.sort}:{found.direction}",
    )


async def _lines(found: search.Plan, *, full_phone: bool, timezone: str) -> AsyncIterator[list[list[Any]]]:
    zone = ZoneInfo(timezone)
    async for batch in search.batches(found, size=EXPORT_BATCH):
        yield [cells(row, full_phone=full_phone, zone=zone) for row in batch]


async def write_csv(found: search.Plan, write: Write, *, full_phone: bool, timezone: str) -> int:
    """The header, then each batch of members as one chunk; returns how many members were written."""
    return await sheets.write_csv(HEADER, _lines(found, full_phone=full_phone, timezone=timezone), write)


async def write_xlsx(found: search.Plan, write: Write, *, full_phone: bool, timezone: str) -> int:
    """The members into a write-only workbook, batch by batch, then the file in chunks."""
    lines = _lines(found, full_phone=full_phone, timezone=timezone)
    return await sheets.write_xlsx(HEADER, lines, write, title="会员")
