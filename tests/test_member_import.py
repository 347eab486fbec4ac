"""Member import on PostgreSQL: the files it reads, what each row does, a re-import changes nothing."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime, time, timedelta
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
from tests.support.factories import EFFECTS, make_member, make_merchant

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


def xlsx(rows: list[list[Any]]) -> bytes:
    """An .xlsx file as Excel writes it: numbers as numbers, dates as dates."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


XLSX_ROWS: list[list[Any]] = [
    ["会员号", "手机号", "姓名", "生日", "性别", "等级", "积分", "积分到期日", "储值本金（元）", "备注"],
    [
        "VIP001",
        13800138000,
        "张三",
        datetime(1990, 5, 20),
        "男",
        "金卡",
        1200,
        datetime(2099, 12, 31),
        128.5,
        "老客",
    ],
    ["VIP002", "13900139000", "李四", "1985/3/1", "女", None, 300.0, None, 0, None],
    [None, "+86 137-0013-7000", "王五", None, "保密", "silver", None, None, 20, None],
]


@pytest.mark.parametrize(
    ("content", "file_format", "encoding"),
    [
        (FILE.encode("utf-8"), "csv", "utf-8"),
        (FILE.encode("utf-8-sig"), "csv", "utf-8-sig"),
        (FILE.encode("gb18030"), "csv", "gb18030"),
        (FILE.replace(",", "\t").encode("gb18030"), "csv", "gb18030"),
        (xlsx(XLSX_ROWS), "xlsx", ""),
    ],
    ids=["utf8", "bom", "gb18030", "gb18030-tab", "xlsx"],
)
async def test_every_format_imports_the_same_members(
    shop: Merchant, content: bytes, file_format: str, encoding: str
) -> None:
    job = await run_import(shop, content)
    assert (job.file_format, job.encoding, job.created, job.rejected) == (file_format, encoding, 3, 0)
    members = (
        await Member.filter(merchant_id=shop.id)
        .order_by("id")
        .values_list("external_id", "phone", "name", "birthday", "gender")
    )
    assert members == [
        ("VIP001", "13800138000", "张三", date(1990, 5, 20), "male"),
        ("VIP002", "13900139000", "李四", date(1985, 3, 1), "female"),
        (None, "13700137000", "王五", None, "undisclosed"),
    ]
    assert sorted(await PointsTransaction.all().values_list("delta", flat=True)) == [300, 1200]
    assert sorted(await WalletTransaction.all().values_list("principal_delta", flat=True)) == [2_000, 12_850]
    if file_format == "xlsx":
        assert job.ignored_columns == ["备注"]


async def test_a_dry_run_reports_what_would_happen_and_writes_nothing(shop: Merchant) -> None:
    before = await snapshot()
    dry = await run_import(shop, FILE, dry_run=True)
    assert (dry.created, dry.updated, dry.unchanged, dry.rejected) == (3, 0, 0, 0)
    assert await snapshot() == before
    assert await outcomes(dry) == {2: ("created", "", ""), 3: ("created", "", ""), 4: ("created", "", "")}
    await run_import(shop, FILE)
    applied = await snapshot()
    changed = (
        FILE.replace("李四", "李思").replace("13700137000", "13700137000") + "VIP009,1380013800,,,,,,,\n"
    )
    dry = await run_import(shop, changed, dry_run=True)
    assert await outcomes(dry) == {
        2: ("unchanged", "", ""),
        3: ("updated", "", ""),
        4: ("unchanged", "", ""),
        5: ("rejected", "phone", "手机号格式不正确，请输入 11 位中国大陆手机号"),
    }
    assert (dry.created, dry.updated, dry.unchanged, dry.rejected) == (0, 1, 2, 1)
    assert await snapshot() == applied


async def test_each_rejected_row_names_the_field_and_the_reason(shop: Merchant) -> None:
    erased = await make_member(shop, openid="o-gone")
    await Member.filter(id=erased.id).update(
        external_id="GONE1", anonymized_at=datetime.now(UTC), openid=None
    )
    for n, openid in enumerate(("o-a", "o-b")):
        member = await make_member(shop, openid=openid)
        await Member.filter(id=member.id).update(phone="13600136000", name=f"同号{n}")
    rows = [
        "A1,12345,,,,,,,",  # 2 bad phone
        ",,无号,,,,,,",  # 3 no identity
        "A3,13800000003,,,,白金,,,",  # 4 unknown tier
        "A4,13800000004,,,,,-5,,",  # 5 negative points
        "A5,13800000005,,,,,1.5,,",  # 6 fractional points
        "A6,13800000006,,1990-13-01,,,,,",  # 7 bad date
        "A7,13800000007,,2999-01-01,,,,,",  # 8 birthday in the future
        "A8,13800000008,,,,,100,2020-01-01,",  # 9 expired points
        "A9,13800000009,,,,,,,1.005",  # 10 three decimals
        "A10,13800000010,,,,,,,-1",  # 11 negative stored value
        "A11,13800000011,,,未知,,,,",  # 12 bad gender
        "DUP,13800000012,,,,,,,",  # 13 duplicate 会员号
        "DUP,13800000013,,,,,,,",  # 14 duplicate 会员号
        ",13800000014,,,,,,,",  # 15 duplicate phone (with row 16)
        "A16,13800000014,,,,,,,",  # 16 shares the phone: fine itself
        "GONE1,13800000016,,,,,,,",  # 17 erased member
        ",13600136000,,,,,,,",  # 18 two members have this phone
        "OK1,13800000018,好人,,,,,,",  # 19 fine
    ]
    job = await run_import(shop, HEADER + "\n".join(rows) + "\n")
    assert await outcomes(job) == {
        2: ("rejected", "phone", "手机号格式不正确，请输入 11 位中国大陆手机号"),
        3: ("rejected", "phone", "缺少手机号或会员号，无法识别会员"),
        4: ("rejected", "tier", "未知的会员等级「白金」（可用：diamond、gold、normal、silver）"),
        5: ("rejected", "points", "积分不能为负数"),
        6: ("rejected", "points", "积分须为整数"),
        7: ("rejected", "birthday", "生日格式不正确，请按 1990-05-20 的格式输入"),
        8: ("rejected", "birthday", "生日必须是过去的日期"),
        9: ("rejected", "points_expire_on", "积分到期日 2020-01-01 已过，不能导入已过期的积分"),
        10: ("rejected", "stored_value", "储值本金最多两位小数（单位：元）"),
        11: ("rejected", "stored_value", "储值本金不能为负数"),
        12: ("rejected", "gender", "请回复 男、女 或 保密"),
        13: ("rejected", "external_id", "会员号在文件中出现多次（第 13、14 行），同一会员只能出现一次"),
        14: ("rejected", "external_id", "会员号在文件中出现多次（第 13、14 行），同一会员只能出现一次"),
        15: ("rejected", "phone", "手机号在文件中出现多次（第 15、16 行），同一会员只能出现一次"),
        16: ("created", "", ""),
        17: ("rejected", "external_id", "会员已注销（资料已按保留政策删除），不能再导入"),
        18: ("rejected", "phone", "该手机号对应多个会员，请在文件中填写会员号以区分"),
        19: ("created", "", ""),
    }
    assert (job.created, job.rejected) == (2, 16)
    assert await Member.filter(merchant_id=shop.id, source=MemberSource.IMPORT).count() == 2
    assert await PointsTransaction.all().count() == 0


async def test_a_changed_row_updates_the_profile_but_never_posts_a_second_opening_balance(
    shop: Merchant,
) -> None:
    await run_import(shop, FILE)
    zhang = await Member.get(external_id="VIP001")
    await Member.filter(id=zhang.id).update(name="张三丰")  # the member's own edit since
    changed = FILE.replace(
        "138 0013 8000,张三,1990-05-20,男,金卡,1200", "13800138001,,1990-05-20,男,银卡,1500"
    )
    job = await run_import(shop, changed)
    assert (job.created, job.updated, job.unchanged) == (0, 1, 2)
    zhang = await Member.get(id=zhang.id)
    # The fields the row gives are written; an empty cell keeps the member's value.
    assert (zhang.phone, zhang.name) == ("13800138001", "张三丰")
    assert (await MemberTier.get(member_id=zhang.id)).tier_code == "silver"
    assert await PointsTransaction.filter(member_id=zhang.id).values_list("delta", flat=True) == [1200]
    row = await MemberImportRow.get(job_id=job.id, row_no=2)
    assert row.note == "期初积分此前已导入 1200，本次的 1500 未再入账"
    # The same changed file again: nothing more.
    before = await snapshot()
    again = await run_import(shop, changed)
    assert (again.updated, again.unchanged) == (0, 3) and await snapshot() == before


async def test_an_existing_member_is_found_by_phone_and_gets_its_opening_balance_once(shop: Merchant) -> None:
    follower = await make_member(shop, openid="o-follower")
    await Member.filter(id=follower.id).update(phone="13800138000")
    job = await run_import(shop, FILE)
    assert (job.created, job.updated) == (2, 1)
    follower = await Member.get(id=follower.id)
    assert (follower.external_id, follower.name, follower.openid) == ("VIP001", "张三", "o-follower")
    assert await PointsTransaction.filter(member_id=follower.id, kind=PointsKind.OPENING).count() == 1
    assert await Member.filter(merchant_id=shop.id).count() == 3


async def test_opening_points_lapse_at_the_end_of_their_expiry_day(shop: Merchant) -> None:
    from handlers.loyalty import ledger

    tomorrow = (datetime.now(SHANGHAI) + timedelta(days=1)).date()
    await run_import(shop, HEADER + f"E1,13800000001,,,,,500,{tomorrow.isoformat()},\n")
    member = await Member.get(external_id="E1")
    end_of_day = datetime.combine(tomorrow, time.max, SHANGHAI)
    assert (await PointsLot.get(member_id=member.id)).expires_at == end_of_day
    assert await ledger.expire_lapsed(end_of_day - timedelta(seconds=1), shop.id) == 0
    assert await ledger.expire_lapsed(end_of_day + timedelta(microseconds=1), shop.id) == 1
    assert (await PointsAccount.get(member_id=member.id)).balance == 0
    assert await audit_points() == []


async def test_the_same_file_imported_twice_at_once_creates_each_member_once(shop: Merchant) -> None:
    rows = "".join(f"C{n},{13800000000 + n},会员{n},,,,{n},,{n}.00\n" for n in range(1, 301))
    first, second = await asyncio.gather(run_import(shop, HEADER + rows), run_import(shop, HEADER + rows))
    assert first.created + second.created == 300 and first.unchanged + second.unchanged == 300
    assert await Member.filter(merchant_id=shop.id).count() == 300
    assert await PointsTransaction.all().count() == 300 and await WalletTransaction.all().count() == 300
    assert await audit_points() == [] and await audit_wallet() == []


async def test_welcome_gifts_are_an_explicit_option(shop: Merchant) -> None:
    await run_import(shop, FILE, welcome=True)
    assert await Task.filter(kind="member.registered").count() == 3
    await EFFECTS.run_due(datetime.now(UTC))
    bonuses = await PointsTransaction.filter(kind=PointsKind.EARN_REGISTRATION).values_list(
        "delta", flat=True
    )
    assert bonuses == [50, 50, 50]
