"""Exporting a member search as CSV or XLSX, streamed: rows are fetched in keyset batches
(`search.batches`) and written as they come, so memory does not grow with the result.

- CSV (UTF-8 with a BOM, so Excel reads the Chinese): each batch goes out as one chunk of the response.
- XLSX: openpyxl's write-only workbook keeps each appended row in its temporary file, not in memory;
  the finished workbook (a zip, written only at the end) is saved to a temporary file and sent in
  chunks.

The phone is masked unless the export asks for the full number (which the HTTP layer allows admins
only). Every export is audit-logged (`members.export`: who, when, the format, the filters with any
phone in them masked, and whether full phones were included) before the first row is written. Text
cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) are prefixed with `'`.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook

from handlers.core import audit_log
from handlers.directory import search
from handlers.members.profile import mask_phone, parse_phone
from models.merchant import Merchant

Format = Literal["csv", "xlsx"]
Write = Callable[[bytes], Awaitable[None]]
EXPORT_BATCH = 500
CHUNK = 64 * 1024
CENT = Decimal("0.01")
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
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
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    text = value or ""
    return "'" + text if text.startswith(_FORMULA) else text


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


def _csv(lines: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(lines)
    return buffer.getvalue().encode()


async def write_csv(found: search.Plan, write: Write, *, full_phone: bool, timezone: str) -> int:
    """The header, then each batch of members as one chunk; returns how many members were written."""
    zone = ZoneInfo(timezone)
    await write("\ufeff".encode() + _csv([HEADER]))
    count = 0
    async for batch in search.batches(found, size=EXPORT_BATCH):
        await write(_csv([cells(row, full_phone=full_phone, zone=zone) for row in batch]))
        count += len(batch)
    return count


def _save(workbook: Workbook, target: IO[bytes]) -> None:
    workbook.save(target)
    target.seek(0)


async def write_xlsx(found: search.Plan, write: Write, *, full_phone: bool, timezone: str) -> int:
    """The members into a write-only workbook, batch by batch, then the file in chunks."""
    zone = ZoneInfo(timezone)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("会员")
    sheet.append(HEADER)
    count = 0
    with tempfile.TemporaryFile() as target:
        try:
            async for batch in search.batches(found, size=EXPORT_BATCH):
                for row in batch:
                    sheet.append(cells(row, full_phone=full_phone, zone=zone))
                count += len(batch)
        finally:  # saving also removes openpyxl's own temporary file of the rows, even after a failure
            await asyncio.to_thread(_save, workbook, target)
        while chunk := await asyncio.to_thread(target.read, CHUNK):
            await write(chunk)
    return count
