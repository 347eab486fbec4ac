"""An import's report as CSV (UTF-8 with a BOM, so Excel shows the Chinese): one line per reported row.

A real run reports the rows it refused (with the field and the reason) and the rows with a note (an
opening balance imported before and not posted again); a dry run reports every row and what would
happen to it. Rows come a page at a time, so a large report is never held whole in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

from handlers.member_import import jobs
from models.member_import import MemberImport

HEADER = ("行号", "会员号", "手机号", "结果", "字段", "原因", "说明")
OUTCOMES = {
    "created": "新建",
    "updated": "更新",
    "unchanged": "不变",
    "rejected": "拒绝",
    "pending": "待处理",
}
FIELDS = {
    "external_id": "会员号",
    "phone": "手机号",
    "name": "姓名",
    "birthday": "生日",
    "gender": "性别",
    "tier": "等级",
    "points": "积分",
    "points_expire_on": "积分到期日",
    "stored_value": "储值本金",
}
PAGE = 2_000


def _safe(text: str) -> str:
    """A cell Excel must not read as a formula (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def _line(row: dict[str, Any]) -> Sequence[object]:
    return (
        row["row_no"],
        _safe(row["external_id"] or ""),
        row["phone_masked"],
        OUTCOMES.get(row["status"], row["status"]),
        FIELDS.get(row["field"], row["field"]),
        row["reason"],
        row["note"],
    )


async def chunks(job: MemberImport) -> AsyncIterator[bytes]:
    """The report, as encoded chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    yield codecs.BOM_UTF8 + buffer.getvalue().encode()
    after = 0
    while rows := await jobs.report_rows(job, after=after, limit=PAGE):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows(_line(row) for row in rows)
        yield buffer.getvalue().encode()
        after = rows[-1]["row_no"]
