"""The import job: stage an uploaded file, apply it as a durable task, report what happened.

`stage` reads and validates every row (in a worker thread, a chunk at a time, so a large file never stalls
the event loop nor sits whole in memory), COPYs the rows into `member_import_row`, refuses duplicates within
the file, and creates the job with its task — one transaction: a file that cannot be read stages nothing.
The task (`members.import`, `handlers.effects`) applies batches (`handlers.member_import.apply`) for up to
`TIME_BUDGET` seconds per run, then queues its continuation, so each run stays well within the worker's
task timeout and lease; a run that dies is taken up again when its lease lapses, and a batch is one
transaction, so nothing is applied twice or half. The CLI applies the batches itself, printing progress;
its task stays claimed by it and finishes the job if the CLI stops half-way.

Every row ends `created`, `updated`, `unchanged` or `rejected` (with field and reason). When the job is
done the staged profile columns (phone, name, birthday, gender) are cleared: only the outcome, the
member number and the masked phone stay, for the report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import IO, Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries, sheets, tasks
from handlers.core.errors import NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.member_import import apply, statements
from handlers.member_import.reader import Table, open_table
from handlers.member_import.rows import Context, Row, validate
from handlers.members import lookup as members
from models.member_import import ImportStatus, MemberImport
from models.merchant import Merchant

log = logging.getLogger(__name__)
IMPORT_TASK = "members.import"
TIME_BUDGET = 30.0  # seconds of batches per task run
STAGE_CHUNK = 5_000
MAX_FILENAME = 255
_COLUMNS = (
    "job_id", "row_no", "external_id", "phone", "phone_masked", "name", "birthday", "gender", "tier_code",
    "points", "points_expire_at", "stored_value_fen", "row_hash", "new_code", "status", "field", "reason",
    "note", "phone_shared", "phase",
)  # fmt: skip
_SHARED_SQL = """
UPDATE member_import_row r SET phone_shared = true
  FROM (SELECT phone FROM member_import_row WHERE job_id = :job AND phone IS NOT NULL
         GROUP BY phone HAVING count(*) > 1) s
 WHERE r.job_id = :job AND r.phone = s.phone
"""
_DUPLICATES_SQL = """
WITH dup AS MATERIALIZED (
    SELECT 'external_id' AS field, '会员号' AS label, external_id AS value,
           array_agg(row_no ORDER BY row_no) AS rows
      FROM member_import_row WHERE job_id = :job AND external_id IS NOT NULL
     GROUP BY external_id HAVING count(*) > 1
    UNION ALL
    SELECT 'phone', '手机号', phone, array_agg(row_no ORDER BY row_no)
      FROM member_import_row WHERE job_id = :job AND phone IS NOT NULL
     GROUP BY phone HAVING count(*) > 1 AND bool_or(external_id IS NULL))
UPDATE member_import_row r
   SET status = 'rejected', field = dup.field,
       reason = left(format(:reason, dup.label, array_to_string(dup.rows[1:5], '、')
                                   || CASE WHEN cardinality(dup.rows) > 5 THEN ' 等' ELSE '' END), 255)
  FROM dup
 WHERE r.job_id = :job AND r.status = 'pending'
   AND (dup.field = 'external_id' AND r.external_id = dup.value
        OR dup.field = 'phone' AND r.external_id IS NULL AND r.phone = dup.value)
"""
DUPLICATE = "%s在文件中出现多次（第 %s 行），同一会员只能出现一次"
_FORGET_SQL = """
UPDATE member_import_row SET phone = NULL, name = NULL, birthday = NULL, gender = NULL WHERE job_id = :job
"""
_REPORT_SQL = """
SELECT row_no, external_id, phone_masked, status, field, reason, note FROM member_import_row
 WHERE job_id = :job AND row_no > :after AND (:every OR status = 'rejected' OR note <> '')
 ORDER BY row_no LIMIT :limit
"""


async def _context(merchant: Merchant, now: datetime) -> Context:
    program = await loyalty_config.program(merchant.id)
    _, tiers = await loyalty_config.current_tiers(merchant.id)
    return Context.build(now, merchant.timezone, program.expiry, tiers)


def _validated(table: Table, ctx: Context, size: int) -> list[Row]:
    """The next `size` rows of the table, validated (runs in a worker thread)."""
    rows: list[Row] = []
    for row_no, cells in table.rows:
        rows.append(validate(row_no, cells, ctx))
        if len(rows) == size:
            break
    return rows


def _code(taken: set[str]) -> str:
    """A fresh member code, distinct within the file (the database decides against existing members)."""
    while (code := members.new_member_code()) in taken:
        pass
    taken.add(code)
    return code


def _record(job_id: int, row: Row, taken: set[str]) -> tuple[Any, ...]:
    return (
        job_id, row.row_no, row.external_id, row.phone, row.phone_masked, row.name, row.birthday, row.gender,
        row.tier_code, row.points, row.points_expire_at, row.stored_value_fen, row.profile_hash(),
        "" if row.rejected else _code(taken), "rejected" if row.rejected else "pending", row.field[:32],
        row.reason[:255], "", False, 2 if row.rejected else 0,
    )  # fmt: skip


async def stage(
    merchant: Merchant,
    file: IO[bytes],
    *,
    filename: str,
    dry_run: bool,
    welcome_gifts: bool,
    actor: str,
    now: datetime,
    claimed: bool = False,
    max_unpacked: int | None = None,
) -> tuple[MemberImport, tasks.Queued]:
    """Validate and stage the file; the job and its task (`claimed`: created leased to the caller, who
    applies the batches itself). Raises ValidationError (field `file`) and stages nothing when the file
    cannot be read (or is an XLSX unpacking to more than `max_unpacked` bytes)."""
    ctx = await _context(merchant, now)
    table = await asyncio.to_thread(open_table, file, max_unpacked=max_unpacked)
    async with in_transaction() as conn:
        job = await MemberImport.create(
            merchant_id=merchant.id,
            actor=actor[:32],
            filename=filename[:MAX_FILENAME],
            file_format=table.file_format,
            encoding=table.encoding,
            dry_run=dry_run,
            welcome_gifts=welcome_gifts,
            ignored_columns=table.ignored,
        )
        total = 0
        taken: set[str] = set()
        while rows := await asyncio.to_thread(_validated, table, ctx, STAGE_CHUNK):
            records = [_record(job.id, row, taken) for row in rows]
            async with conn.acquire_connection() as raw:
                await raw.copy_records_to_table("member_import_row", records=records, columns=_COLUMNS)
            total += len(rows)
        if not total:
            raise ValidationError("文件只有表头，没有会员数据", field="file")
        await queries.fetch_rows("ANALYZE member_import_row")  # the planner sees the rows just copied
        await queries.fetch_rows(_SHARED_SQL, job=job.id)
        await queries.fetch_rows(_DUPLICATES_SQL, job=job.id, reason=DUPLICATE)
        await MemberImport.filter(id=job.id).update(total_rows=total)
        await queries.fetch_rows(statements.COUNTS_SQL, job=job.id)
        await audit_log.record(
            merchant.id,
            actor,
            "members.import",
            f"import:{job.id}",
            filename=job.filename,
            rows=total,
            dry_run=dry_run,
            welcome_gifts=welcome_gifts,
        )
        queued = await tasks.queue(
            IMPORT_TASK,
            f"import:{job.id}:0",
            {"job_id": job.id, "step": 0},
            merchant_id=merchant.id,
            now=now,
            inline=claimed,
        )
    return await MemberImport.get(id=job.id), queued


async def start(
    merchant: Merchant,
    file: IO[bytes],
    *,
    filename: str,
    dry_run: bool,
    welcome_gifts: bool,
    actor: str,
    now: datetime,
    effects: Effects,
) -> MemberImport:
    """Stage an uploaded file and hand its job to the task runner (the response does not wait for it).
    An XLSX upload may unpack to `sheets.MAX_UNPACKED_BYTES` at most, as for every upload."""
    job, queued = await stage(
        merchant,
        file,
        filename=filename,
        dry_run=dry_run,
        welcome_gifts=welcome_gifts,
        actor=actor,
        now=now,
        max_unpacked=sheets.MAX_UNPACKED_BYTES,
    )
    await effects.after_commit(queued)
    return job


Progress = Callable[[MemberImport], None]


async def drive(
    job_id: int, effects: Effects, *, budget: float | None = None, progress: Progress | None = None
) -> bool:
    """Apply the job's batches until none is left (then finish it: True) or `budget` seconds passed.

    A batch's second phase (its ledger postings, the bulk of the work) runs while the next batch's
    first phase does, on another connection: PostgreSQL uses both cores."""
    job = await MemberImport.get(id=job_id)
    if job.status == ImportStatus.DONE:
        return True
    await MemberImport.filter(id=job.id, started_at=None).update(
        started_at=effects.clock(), status=ImportStatus.RUNNING
    )
    _, tiers = await loyalty_config.current_tiers(job.merchant_id)
    welcome = members.MEMBER_REGISTERED if job.welcome_gifts else None
    batch = apply.Batch(job.id, job.merchant_id, job.actor, tiers[0].code, welcome)
    if job.dry_run:
        return await _drive_dry(job, batch, effects, budget, progress)
    if (left := await apply.unfinished(batch)) is not None:
        await apply.ledger_batch(batch, left, now=effects.clock())
    started = time.monotonic()
    posting: asyncio.Task[int] | None = None
    try:
        while budget is None or time.monotonic() - started < budget:
            staged = await apply.members_batch(batch, now=effects.clock())
            if posting is not None:
                await posting
                posting = None
                if progress is not None:
                    progress(await MemberImport.get(id=job.id))
            if staged is None:
                await _finish(job, effects.clock())
                return True
            span, queued = staged
            await _dispatch(effects, queued, job.id)
            posting = asyncio.create_task(apply.ledger_batch(batch, span, now=effects.clock()))
    finally:
        if posting is not None:
            await posting
    return False


async def _drive_dry(
    job: MemberImport, batch: apply.Batch, effects: Effects, budget: float | None, progress: Progress | None
) -> bool:
    started = time.monotonic()
    while budget is None or time.monotonic() - started < budget:
        if not await apply.dry_batch(batch, now=effects.clock()):
            await _finish(job, effects.clock())
            return True
        if progress is not None:
            progress(await MemberImport.get(id=job.id))
    return False


async def _dispatch(effects: Effects, task_ids: list[int], job_id: int) -> None:
    if not task_ids:
        return
    try:
        await effects.dispatch(task_ids)
    except Exception:  # committed: the sweep runs them
        log.exception("welcome effects dispatch failed", extra={"job_id": job_id})


async def _finish(job: MemberImport, now: datetime) -> None:
    async with in_transaction():
        done = (
            await MemberImport.filter(id=job.id)
            .exclude(status=ImportStatus.DONE)
            .update(status=ImportStatus.DONE, finished_at=now)
        )
        if not done:
            return
        await queries.fetch_rows(statements.COUNTS_SQL, job=job.id)
        await queries.fetch_rows(_FORGET_SQL, job=job.id)
        final = await MemberImport.get(id=job.id)
        await audit_log.record(
            job.merchant_id,
            job.actor,
            "members.import.finished",
            f"import:{job.id}",
            dry_run=job.dry_run,
            created=final.created,
            updated=final.updated,
            unchanged=final.unchanged,
            rejected=final.rejected,
        )


async def run_task(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The `members.import` effect: a time-boxed run of the job, continued by a fresh task if unfinished."""
    job_id, step = int(payload["job_id"]), int(payload.get("step", 0))
    if await drive(job_id, effects, budget=TIME_BUDGET):
        return {"job_id": job_id, "done": True}
    job = await MemberImport.get(id=job_id)
    async with in_transaction():
        queued = await effects.queue(
            IMPORT_TASK,
            f"import:{job_id}:{step + 1}",
            {"job_id": job_id, "step": step + 1},
            merchant_id=job.merchant_id,
        )
    await effects.after_commit(queued)
    return {"job_id": job_id, "done": False}


async def get_job(merchant: Merchant, job_id: int) -> MemberImport:
    job = await queries.first(MemberImport, id=job_id, merchant_id=merchant.id)
    if job is None:
        raise NotFound("没有找到这次导入", field="id")
    return job


async def report_rows(
    job: MemberImport, *, after: int, limit: int, every: bool | None = None
) -> list[dict[str, Any]]:
    """The report's rows after row `after`: rejected rows and rows with a note (a dry run: every row)."""
    return await queries.fetch_rows(
        _REPORT_SQL, job=job.id, after=after, limit=limit, every=job.dry_run if every is None else every
    )
