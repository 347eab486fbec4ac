"""Admin JSON API: bulk member import from CSV or XLSX (role admin), its progress and its report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from aiohttp import web
from pydantic import Field

from handlers.member_import import jobs, report
from models.member_import import MemberImport
from webhooks.api import BigId, Call, In, Out, Routes
from webhooks.auth import ADMIN
from webhooks.forms import Upload

routes = Routes("member_import")
SAMPLE = 20  # rejected rows shown inline; the report has them all


class ImportForm(In):
    file: Annotated[Upload, Field(description="a .csv (UTF-8 with or without BOM, or GB18030) or .xlsx file")]
    dry_run: bool = Field(False, description="report what would happen and change nothing")
    welcome_gifts: bool = Field(
        False, description="new members get the registration bonus and new-member coupons (default: not)"
    )


class ImportPath(In):
    id: BigId


class RejectedRow(Out):
    row: int = Field(description="the spreadsheet's row number (the header is row 1)")
    field: str
    reason: str


class ImportOut(Out):
    id: int
    status: str = Field(description="queued, running or done")
    dry_run: bool
    welcome_gifts: bool
    filename: str
    file_format: str = Field(description="csv or xlsx")
    encoding: str = Field(description="csv: utf-8, utf-8-sig or gb18030")
    total_rows: int
    processed_rows: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    ignored_columns: list[str] = Field(description="header names that are not import columns")
    rejections: list[RejectedRow] = Field(description=f"the first {SAMPLE} rejected rows")
    report_url: str = Field(description="the report as CSV")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


async def _out(job: MemberImport) -> ImportOut:
    rejected = await jobs.report_rows(job, after=0, limit=SAMPLE, every=False)
    return ImportOut(
        id=job.id,
        status=job.status.value,
        dry_run=job.dry_run,
        welcome_gifts=job.welcome_gifts,
        filename=job.filename,
        file_format=job.file_format,
        encoding=job.encoding,
        total_rows=job.total_rows,
        processed_rows=job.processed_rows,
        created=job.created,
        updated=job.updated,
        unchanged=job.unchanged,
        rejected=job.rejected,
        ignored_columns=job.ignored_columns,
        rejections=[
            RejectedRow(row=r["row_no"], field=r["field"], reason=r["reason"])
            for r in rejected
            if r["status"] == "rejected"
        ],
        report_url=f"/api/admin/members/imports/{job.id}/report",
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@routes.post(
    "/api/admin/members/import", form=ImportForm, response=ImportOut, status=202, auth=ADMIN, errors=(413,)
)
async def import_members(call: Call[ImportForm, None]) -> ImportOut:
    """Upload members (opening points and stored value) to import; applied in the background."""
    job = await jobs.start(
        call.merchant,
        call.body.file.file,
        filename=call.body.file.filename or "upload",
        dry_run=call.body.dry_run,
        welcome_gifts=call.body.welcome_gifts,
        actor=f"staff:{call.staff.id}",
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return await _out(job)


@routes.get("/api/admin/members/imports/{id}", path_model=ImportPath, response=ImportOut, auth=ADMIN)
async def get_import(call: Call[None, ImportPath]) -> ImportOut:
    """An import's status, progress and counts."""
    return await _out(await jobs.get_job(call.merchant, call.path.id))


@routes.get(
    "/api/admin/members/imports/{id}/report",
    path_model=ImportPath,
    media="text/csv",
    auth=ADMIN,
)
async def get_import_report(call: Call[None, ImportPath]) -> web.StreamResponse:
    """The import's report as CSV (UTF-8 with a BOM): 行号, 会员号, 手机号 (masked), 结果, 字段, 原因, 说明 —
    the rejected rows and those with a note (a dry run: every row)."""
    job = await jobs.get_job(call.merchant, call.path.id)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="member-import-{job.id}.csv"',
        }
    )
    await response.prepare(call.request)
    async for chunk in report.chunks(job):
        await response.write(chunk)
    await response.write_eof()
    return response
