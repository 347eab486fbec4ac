"""Member import on PostgreSQL: the files it reads, what each row does, a re-import changes nothing."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.loyalty import config as loyalty_config
from handlers.loyalty.ledger_audit import audit_points
from handlers.member_import import jobs
from handlers.wallet.audit import audit_wallet
from models.loyalty import AuditLog, MemberTier, TierChange
from models.member import Member, MemberSource
from models.member_import import ImportStatus, MemberImport, MemberImportRow
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind, PointsLot, PointsTransaction
from models.task import Task
from models.wallet import WalletAccount, WalletKind, WalletTransaction
from tests.support.factories import EFFECTS, make_merchant

SHANGHAI = ZoneInfo("Asia/Shanghai")
HEADER = "会员号,手机号,姓名,生日,性别,等级,积分,积分到期日,储值本金(元)\n"
ROWS = (
    "VIP001,138 0013 8000,张三,1990-05-20,男,金卡,1200,2099-12-31,128.50\n"
    "VIP002,13900139000,李四,1985/3/1,女,,300,,0\n"
    ",+86 137-0013-7000,王五,,保密,silver,,,20\n"
)
FILE = HEADER + ROWS


@pytest.fixture
async def shop(client: Any) -> Merchant:
    merchant = await make_merchant()
    await loyalty_config.save_program(
        merchant.id,
        {"registration_bonus": 50, "expiry": {"kind": "rolling_months", "months": 12}},
        actor="test",
    )
    return merchant


async def run_import(
    merchant: Merchant, content: bytes | str, *, dry_run: bool = False, welcome: bool = False
) -> MemberImport:
    data = content.encode() if isinstance(content, str) else content
    job, _ = await jobs.stage(
        merchant,
        io.BytesIO(data),
        filename="members.csv",
        dry_run=dry_run,
        welcome_gifts=welcome,
        actor="staff:1",
        now=datetime.now(UTC),
    )
    assert await jobs.drive(job.id, EFFECTS)
    return await MemberImport.get(id=job.id)


async def outcomes(job: MemberImport) -> dict[int, tuple[str, str, str]]:
    rows = await MemberImportRow.filter(job_id=job.id).order_by("row_no")
    return {row.row_no: (row.status, row.field, row.reason) for row in rows}


async def snapshot() -> dict[str, Any]:
    """Everything an import may write, as comparable values."""
    return {
        "members": await Member.all().order_by("id").values(),
        "points": await PointsTransaction.all().order_by("id").values(),
        "lots": await PointsLot.all().order_by("id").values(),
        "accounts": await PointsAccount.all().order_by("id").values(),
        "wallet": await WalletTransaction.all().order_by("id").values(),
        "wallets": await WalletAccount.all().order_by("id").values(),
        "tiers": await MemberTier.all().order_by("id").values(),
        "tier_changes": await TierChange.all().order_by("id").values(),
        "tasks": await Task.exclude(kind=jobs.IMPORT_TASK).order_by("id").values(),
    }


async def test_csv_creates_members_with_opening_points_and_stored_value(shop: Merchant) -> None:
    job = await run_import(shop, FILE)
    assert (job.status, job.total_rows, job.created, job.updated, job.unchanged, job.rejected) == (
        ImportStatus.DONE,
        3,
        3,
        0,
        0,
        0,
    )
    assert (job.file_format, job.encoding) == ("csv", "utf-8")
    zhang = await Member.get(merchant_id=shop.id, external_id="VIP001")
    assert (zhang.phone, zhang.name, zhang.birthday, zhang.gender, zhang.source) == (
        "13800138000",
        "张三",
        date(1990, 5, 20),
        "male",
        MemberSource.IMPORT,
    )
    assert zhang.profile_completed_at is not None and not zhang.subscribed and len(zhang.code) == 8
    wang = await Member.get(merchant_id=shop.id, phone="13700137000")
    assert wang.external_id is None and wang.birthday is None and wang.profile_completed_at is None
    # Opening points: one `opening` posting and one lot expiring at the end of the given local day.
    txn = await PointsTransaction.get(member_id=zhang.id)
    assert (txn.kind, txn.delta, txn.idempotency_key, txn.actor) == (
        PointsKind.OPENING,
        1200,
        f"import:opening:{zhang.id}",
        "staff:1",
    )
    lot = await PointsLot.get(member_id=zhang.id)
    assert (lot.amount, lot.remaining) == (1200, 1200)
    assert lot.expires_at == datetime.combine(date(2099, 12, 31), time.max, SHANGHAI)
    # No date: the programme's policy (12 months) from the import.
    li = await Member.get(merchant_id=shop.id, external_id="VIP002")
    li_lot = await PointsLot.get(member_id=li.id)
    assert li_lot.expires_at is not None and li_lot.expires_at.astimezone(SHANGHAI).time() == time.max
    assert 364 <= (li_lot.expires_at - datetime.now(UTC)).days <= 366
    # Opening stored value: principal, kind `opening`; a zero amount posts nothing.
    wallet = await WalletTransaction.get(member_id=zhang.id)
    assert (wallet.kind, wallet.principal_delta, wallet.bonus_delta) == (WalletKind.OPENING, 12_850, 0)
    assert await WalletTransaction.filter(member_id=li.id).count() == 0
    assert (await WalletAccount.get(member_id=wang.id)).principal_fen == 2_000
    # Tiers by name or code, with history.
    assert (await MemberTier.get(member_id=zhang.id)).tier_code == "gold"
    assert (await MemberTier.get(member_id=wang.id)).tier_code == "silver"
    assert await MemberTier.filter(member_id=li.id).count() == 0
    change = await TierChange.get(member_id=zhang.id)
    assert (change.from_code, change.to_code, change.reason) == ("normal", "gold", "import")
    # No welcome bonus by default, and the ledgers audit clean.
    assert await PointsTransaction.filter(kind=PointsKind.EARN_REGISTRATION).count() == 0
    assert await Task.filter(kind="member.registered").count() == 0
    assert await audit_points() == [] and await audit_wallet() == []
    actions = await AuditLog.filter(merchant_id=shop.id).order_by("id").values_list("action", flat=True)
    assert actions[-2:] == ["members.import", "members.import.finished"]
    # Done: the staged profile is forgotten, the outcome stays.
    staged = await MemberImportRow.get(job_id=job.id, row_no=2)
    assert (staged.phone, staged.name, staged.phone_masked, staged.status) == (
        None,
        None,
        "138****8000",
        "created",
    )


async def test_reimporting_the_same_file_changes_nothing(shop: Merchant) -> None:
    await run_import(shop, FILE)
    before = await snapshot()
    again = await run_import(shop, FILE)
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 3, 0)
    assert await snapshot() == before
    assert await audit_points() == [] and await audit_wallet() == []
