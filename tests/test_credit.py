"""Credit (赊账): limits, purchases on credit in the till's one call, repayments, refunds, the overdue
rule with FIFO repayment, concurrency on one member, and the audit (also `memberbot audit credit`)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tortoise.exceptions import OperationalError

from bot.settings import Settings
from handlers.core.errors import IdempotencyMismatch, ValidationError
from handlers.credit import ledger as credit
from handlers.credit import overdue
from handlers.credit.audit import audit_credit
from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from handlers.members import blocking
from handlers.notices import settings as notice_settings
from handlers.notices.catalog import KINDS
from handlers.staff.scope import Scope
from handlers.till import context as till_context
from handlers.till.purchase import PurchaseRequest, record_purchase
from handlers.till.refund import refund_purchase
from handlers.wallet import ledger as wallet
from handlers.wallet.audit import audit_wallet
from models.credit import CreditAccount, CreditEntry, CreditKind
from models.loyalty import AuditLog
from models.notice import NoticeDelivery
from models.points import PointsAccount, PointsKind
from models.purchase import Purchase
from tests.conftest import SECRET
from tests.support.factories import EFFECTS, make_member, make_merchant

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    member = await make_member(merchant)
    return merchant, member


async def limit(shop: Any, fen: int, key: str = "l1", member: Any = None) -> credit.LimitChange:
    merchant, default = shop
    target = member or default
    return await credit.set_limit(
        merchant, target.id, fen, key=key, now=NOW, actor="staff:1", reason="月结客户"
    )


async def buy(
    shop: Any, key: str, amount_fen: int, *, now: datetime = NOW, member: Any = None, **extra: Any
) -> Any:
    merchant, default = shop
    target = member or default
    request = PurchaseRequest(key, target.id, amount_fen, **extra)
    return await record_purchase(merchant, None, request, now=now, effects=EFFECTS)


async def owed(member: Any) -> tuple[int, int]:
    account = await CreditAccount.get_or_none(member_id=member.id)
    return (account.balance_fen, account.limit_fen) if account else (0, 0)


async def repay(
    shop: Any, fen: int, key: str, *, now: datetime = NOW, member: Any = None
) -> credit.Repayment:
    merchant, default = shop
    return await credit.repay(
        merchant, (member or default).id, fen, key=key, payment_method="cash", now=now, actor="staff:1"
    )


async def test_a_limit_change_is_one_ledger_row_and_one_audit_row(shop: Any) -> None:
    merchant, member = shop
    change = await limit(shop, 50_000)
    assert (change.limit_fen, change.previous_limit_fen, change.owed_fen, change.replayed) == (
        50_000,
        0,
        0,
        False,
    )
    entry = await CreditEntry.get(member_id=member.id)
    assert (entry.kind, entry.amount_fen, entry.balance_after, entry.limit_after) == (
        "limit_change",
        0,
        0,
        50_000,
    )
    log = await AuditLog.get(merchant_id=merchant.id, action="credit.limit")
    assert log.subject == f"member:{member.id}" and log.actor == "staff:1"
    assert log.detail == {
        "limit_fen": 50_000,
        "previous_limit_fen": 0,
        "owed_fen": 0,
        "reason": "月结客户",
        "entry_id": entry.id,
    }
    again = await limit(shop, 50_000)  # the same key: replayed as it was answered, nothing new
    assert again == credit.LimitChange(member.id, 50_000, 0, 0, entry.id, replayed=True)
    with pytest.raises(IdempotencyMismatch):
        await limit(shop, 60_000)  # the same key for another limit
    same = await limit(shop, 50_000, key="l2")  # another key, the same limit: nothing to write
    assert same.entry_id is None and not same.replayed
    assert await CreditEntry.filter(member_id=member.id).count() == 1
    assert await AuditLog.filter(action="credit.limit").count() == 1
    assert await audit_credit() == []


async def test_a_purchase_puts_part_of_its_amount_on_credit_within_the_limit(shop: Any) -> None:
    _, member = shop
    await limit(shop, 30_000)
    result = await buy(shop, "p1", 12_345, credit_fen=10_000)
    assert (result.paid_fen, result.credit_fen, result.points_earned) == (12_345, 10_000, 123)
    assert await owed(member) == (10_000, 30_000)
    charge = await CreditEntry.get(member_id=member.id, kind=CreditKind.CHARGE)
    assert charge.purchase_id == result.purchase_id and charge.amount_fen == 10_000
    assert charge.balance_after == 10_000 and charge.limit_after == 30_000
    assert charge.due_at == NOW + timedelta(days=30) and charge.created_at == NOW
    assert charge.idempotency_key == "purchase:p1:credit"
    replay = await buy(shop, "p1", 12_345, credit_fen=10_000)
    assert replay.replayed and replay.purchase_id == result.purchase_id and replay.credit_fen == 10_000
    assert await owed(member) == (10_000, 30_000)
    with pytest.raises(IdempotencyMismatch):
        await buy(shop, "p1", 12_345, credit_fen=9_000)
    assert await audit_credit() == [] and await audit_points() == []


async def test_the_receipt_tells_the_member_what_they_put_on_credit(shop: Any) -> None:
    _, member = shop
    await limit(shop, 30_000)
    await buy(shop, "p1", 12_345, credit_fen=10_000)
    delivery = await NoticeDelivery.get(member_id=member.id, kind="purchase_receipt")
    assert delivery.context["credit"] == "100.00"
    body = KINDS["purchase_receipt"].body
    text = notice_settings.render_body(body, {**KINDS["purchase_receipt"].sample, **delivery.context})
    assert "实付 123.45 元（赊账 100.00 元，请按时还款）。获得 123 积分" in text
    before = {k: v for k, v in delivery.context.items() if k != "credit"}  # a receipt queued before credit
    assert "赊账" not in notice_settings.render_body(body, {**KINDS["purchase_receipt"].sample, **before})


async def test_a_purchase_above_the_available_credit_is_refused_and_writes_nothing(shop: Any) -> None:
    _, member = shop
    await limit(shop, 10_000)
    await buy(shop, "p1", 6_000, credit_fen=6_000)
    with pytest.raises(credit.CreditLimitExceeded) as refused:
        await buy(shop, "p2", 5_000, credit_fen=5_000)
    assert refused.value.message == "信用额度不足：本次赊账 50.00 元，可用额度 40.00 元"
    assert refused.value.field == "credit_fen" and refused.value.available_fen == 4_000
    assert not await Purchase.exists(idempotency_key="p2")
    with pytest.raises(ValidationError) as too_much:  # credit + stored value above what is paid
        await buy(shop, "p3", 1_000, credit_fen=1_001)
    assert too_much.value.field == "credit_fen"
    await buy(shop, "p4", 4_000, credit_fen=4_000)  # exactly up to the limit
    assert await owed(member) == (10_000, 10_000)
    assert await audit_credit() == []


async def test_a_member_without_a_limit_cannot_buy_on_credit(shop: Any) -> None:
    _, member = shop
    with pytest.raises(credit.CreditLimitExceeded):
        await buy(shop, "p1", 1_000, credit_fen=1)
    assert await owed(member) == (0, 0) and not await Purchase.exists(idempotency_key="p1")


async def test_a_blocked_member_cannot_buy_on_credit_but_may_repay(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    await buy(shop, "p1", 3_000, credit_fen=3_000)
    await blocking.block(merchant, member.id, reason="逾期未还", actor="staff:1", now=NOW)
    with pytest.raises(blocking.MemberBlocked):
        await buy(shop, "p2", 1_000, credit_fen=1_000)
    paid = await repay(shop, 1_000, "r1")
    assert (paid.owed_fen, paid.limit_fen) == (2_000, 10_000)
    assert await owed(member) == (2_000, 10_000)


async def test_stored_value_and_credit_pay_one_purchase_together(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    await wallet.top_up(merchant, member.id, 5_000, key="t1", payment_method="cash", now=NOW, effects=EFFECTS)
    result = await buy(shop, "p1", 12_000, stored_value_fen=5_000, credit_fen=7_000)
    assert (result.stored_value_fen, result.credit_fen) == (5_000, 7_000)
    assert (await wallet.balance(merchant.id, member.id)).total_fen == 0
    assert await owed(member) == (7_000, 10_000)
    with pytest.raises(ValidationError):
        await buy(shop, "p2", 1_000, stored_value_fen=600, credit_fen=500)
    assert await audit_credit() == [] and await audit_wallet() == []


async def test_repayment_is_idempotent_and_never_above_what_is_owed(shop: Any) -> None:
    _, member = shop
    await limit(shop, 10_000)
    await buy(shop, "p1", 8_000, credit_fen=8_000)
    first = await repay(shop, 3_000, "r1")
    await repay(shop, 1_000, "r0")
    again = await repay(shop, 3_000, "r1")  # replayed as it was answered then
    assert again == credit.Repayment(first.entry_id, member.id, 3_000, 5_000, 10_000, replayed=True)
    assert first == credit.Repayment(first.entry_id, member.id, 3_000, 5_000, 10_000)
    with pytest.raises(IdempotencyMismatch):
        await repay(shop, 2_000, "r1")
    with pytest.raises(credit.Overpaid) as over:
        await repay(shop, 4_001, "r2")
    assert over.value.message == "还款金额 amount_fen 超过欠款：当前欠款 40.00 元"
    done = await repay(shop, 4_000, "r3")
    assert done.owed_fen == 0 and await owed(member) == (0, 10_000)
    assert await audit_credit() == []


async def test_a_limit_below_what_is_owed_is_refused(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    await buy(shop, "p1", 6_000, credit_fen=6_000)
    with pytest.raises(credit.LimitBelowOwed) as refused:
        await limit(shop, 5_999, key="l2")
    assert refused.value.message == "信用额度 limit_fen 不能低于会员当前欠款 60.00 元，请先还款再调低额度"
    assert await owed(member) == (6_000, 10_000)
    lowered = await limit(shop, 6_000, key="l3")
    assert (lowered.limit_fen, lowered.previous_limit_fen, lowered.owed_fen) == (6_000, 10_000, 6_000)
    assert await AuditLog.filter(merchant_id=merchant.id, action="credit.limit").count() == 2
    with pytest.raises(credit.CreditLimitExceeded):
        await buy(shop, "p2", 1, credit_fen=1)


async def test_refund_reverses_the_charge_and_returns_what_was_already_repaid(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 20_000)
    one = await buy(shop, "p1", 5_000, credit_fen=5_000)
    two = await buy(shop, "p2", 8_000, credit_fen=8_000)
    refunded = await refund_purchase(merchant, None, one.purchase_id, key="r1", now=NOW, effects=EFFECTS)
    assert (refunded.credit_reversed_fen, refunded.credit_cash_back_fen) == (5_000, 0)
    assert await owed(member) == (8_000, 20_000)
    again = await refund_purchase(merchant, None, one.purchase_id, key="r1", now=NOW, effects=EFFECTS)
    assert again.replayed and (again.credit_reversed_fen, again.credit_cash_back_fen) == (5_000, 0)
    assert await owed(member) == (8_000, 20_000)
    await repay(shop, 6_000, "pay1")  # owed 2,000 of the second charge
    back = await refund_purchase(merchant, None, two.purchase_id, key="r2", now=NOW, effects=EFFECTS)
    assert (back.credit_reversed_fen, back.credit_cash_back_fen) == (2_000, 6_000)
    assert await owed(member) == (0, 20_000)
    reversals = await CreditEntry.filter(member_id=member.id, kind=CreditKind.REVERSAL).order_by("id")
    assert [(r.amount_fen, r.purchase_id) for r in reversals] == [
        (-5_000, one.purchase_id),
        (-2_000, two.purchase_id),
    ]
    plain = await buy(shop, "p3", 1_000)  # a purchase without credit: its refund reverses nothing
    none = await refund_purchase(merchant, None, plain.purchase_id, key="r3", now=NOW, effects=EFFECTS)
    assert (none.credit_reversed_fen, none.credit_cash_back_fen) == (0, 0)
    assert await audit_credit() == [] and await audit_points() == []


async def test_the_ledger_is_append_only_and_the_account_never_above_its_limit(shop: Any) -> None:
    _, member = shop
    await limit(shop, 1_000)
    with pytest.raises(OperationalError, match="append-only"):
        await CreditEntry.filter(member_id=member.id).update(amount_fen=5)
    with pytest.raises(OperationalError, match="append-only"):
        await CreditEntry.filter(member_id=member.id).delete()
    with pytest.raises(Exception, match="credit_account_within_limit"):
        await CreditAccount.filter(member_id=member.id).update(balance_fen=1_001)


async def test_concurrent_purchases_on_credit_never_exceed_the_limit(shop: Any) -> None:
    """120 purchases of 10 yuan on credit at once against a 500-yuan limit: exactly 50 go through."""
    _, member = shop
    await limit(shop, 50_000)

    async def one(i: int) -> int:
        try:
            await buy(shop, f"c{i}", 1_000, credit_fen=1_000)
        except credit.CreditLimitExceeded:
            return 0
        return 1_000

    charged = await asyncio.gather(*(one(i) for i in range(120)))
    assert sum(charged) == 50_000 and charged.count(1_000) == 50
    assert await owed(member) == (50_000, 50_000)
    assert await CreditEntry.filter(member_id=member.id, kind=CreditKind.CHARGE).count() == 50
    assert await Purchase.filter(member_id=member.id).count() == 50
    assert await audit_credit() == [] and await audit_points() == []


async def test_concurrent_purchases_with_a_points_offset_on_credit_take_the_locked_path_exactly(
    shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A points offset makes concurrent purchases find their context moved (`stale`): they are computed
    again under the locks, the credit account's included — still exactly within the limit."""
    merchant, member = shop
    locked: list[bool] = []
    real_lock = till_context.lock

    async def lock(merchant: Any, needs: till_context.Needs) -> None:
        locked.append(needs.credit)
        await real_lock(merchant, needs)

    monkeypatch.setattr(till_context, "lock", lock)
    await limit(shop, 30_000)
    await ledger.credit(
        merchant.id, member.id, 100_000, PointsKind.GRANT, key="seed", now=NOW, expires_at=None
    )

    async def one(i: int) -> Any:
        try:
            return await buy(shop, f"o{i}", 2_000, points_offset=100, credit_fen=1_000)
        except credit.CreditLimitExceeded:
            return None

    done = [r for r in await asyncio.gather(*(one(i) for i in range(60))) if r is not None]
    assert len(done) == 30 and {(r.offset_points, r.paid_fen, r.credit_fen) for r in done} == {
        (100, 1_900, 1_000)
    }
    assert locked and all(locked)  # some took the locked path, with the credit account's lock
    assert await owed(member) == (30_000, 30_000)
    account = await PointsAccount.get(member_id=member.id)
    assert account.balance == 100_000 - 30 * 100 + sum(r.points_earned for r in done)
    assert await audit_credit() == [] and await audit_points() == []


async def test_concurrent_purchases_and_repayments_keep_the_ledger_exact(shop: Any) -> None:
    _, member = shop
    await limit(shop, 20_000)
    await buy(shop, "seed", 10_000, credit_fen=10_000)

    async def one(i: int) -> int:
        try:
            if i % 3 == 0:
                return -(await repay(shop, 700, f"r{i}")).amount_fen
            await buy(shop, f"c{i}", 1_500, credit_fen=1_500)
            return 1_500
        except (credit.CreditLimitExceeded, credit.Overpaid):
            return 0

    moved = await asyncio.gather(*(one(i) for i in range(150)))
    balance, top = await owed(member)
    assert balance == 10_000 + sum(moved) and 0 <= balance <= top == 20_000
    assert await CreditEntry.filter(member_id=member.id).count() == 2 + sum(1 for m in moved if m)
    assert await audit_credit() == []


async def test_concurrent_repeats_of_one_purchase_charge_once(shop: Any) -> None:
    _, member = shop
    await limit(shop, 50_000)
    results = await asyncio.gather(*(buy(shop, "same", 3_000, credit_fen=3_000) for _ in range(30)))
    assert len({r.purchase_id for r in results}) == 1
    assert await owed(member) == (3_000, 50_000)
    assert await audit_credit() == []


DAY = timedelta(days=1)


async def test_overdue_allocates_repayments_first_in_first_out_with_exact_figures(shop: Any) -> None:
    merchant, alice = shop
    bob = await make_member(merchant, openid="o-bob", name="老王", phone="13812345678")
    carol = await make_member(merchant, openid="o-carol")
    for member in (alice, bob, carol):
        await limit(shop, 100_000, key=f"l{member.id}", member=member)
    # Alice: 100 yuan on day 0 (due day 30), 50 on day 10 (due 40), 30 on day 20 (due 50);
    # she repays 120 on day 25.
    await buy(shop, "a1", 10_000, credit_fen=10_000, member=alice, now=NOW)
    await buy(shop, "a2", 5_000, credit_fen=5_000, member=alice, now=NOW + 10 * DAY)
    await buy(shop, "a3", 3_000, credit_fen=3_000, member=alice, now=NOW + 20 * DAY)
    await repay(shop, 12_000, "ar", member=alice, now=NOW + 25 * DAY)
    # Bob: 80 yuan on day 0 (due day 30), repays 30 on day 40.
    await buy(shop, "b1", 8_000, credit_fen=8_000, member=bob, now=NOW)
    await repay(shop, 3_000, "br", member=bob, now=NOW + 40 * DAY)
    # Carol: 40 yuan on day 0, refunded on day 5: nothing is owed.
    refunded = await buy(shop, "c1", 4_000, credit_fen=4_000, member=carol, now=NOW)
    await refund_purchase(merchant, None, refunded.purchase_id, key="cr", now=NOW + 5 * DAY, effects=EFFECTS)
    everyone = Scope(merchant.id, None)

    async def figures(day: float) -> list[tuple[int, int, datetime, int, int]]:
        found = await overdue.overdue(merchant, NOW + day * DAY, scope=everyone)
        return [(r.member_id, r.overdue_fen, r.oldest_due_at, r.days_overdue, r.owed_fen) for r in found]

    assert await figures(29) == []
    assert await figures(35) == [(bob.id, 8_000, NOW + 30 * DAY, 5, 8_000)]
    assert await figures(45.5) == [
        (bob.id, 5_000, NOW + 30 * DAY, 15, 5_000),
        (alice.id, 3_000, NOW + 40 * DAY, 5, 6_000),  # 120 paid the first charge and 20 of the second
    ]
    assert await figures(60) == [
        (bob.id, 5_000, NOW + 30 * DAY, 30, 5_000),
        (alice.id, 6_000, NOW + 40 * DAY, 20, 6_000),
    ]
    await repay(
        shop, 4_000, "ar2", member=alice, now=NOW + 61 * DAY
    )  # pays the second charge's 30, 10 of the third
    assert (await figures(62))[1:] == [(alice.id, 2_000, NOW + 50 * DAY, 12, 2_000)]
    assert await figures(45.5) == [  # as of a past date, later repayments do not count
        (bob.id, 5_000, NOW + 30 * DAY, 15, 5_000),
        (alice.id, 3_000, NOW + 40 * DAY, 5, 6_000),
    ]
    rows = await overdue.overdue(merchant, NOW + 45.5 * DAY, scope=everyone)
    text = overdue.to_csv(rows, merchant.timezone).decode()
    assert text.splitlines() == [
        "\ufeff会员号,姓名,手机号,逾期金额（元）,最早到期,逾期天数,欠款（元）,信用额度（元）",
        f"{bob.code},老王,138****5678,50.00,2026-12-01 12:00,15,50.00,1000.00",
        f"{alice.code},,,30.00,2026-12-11 12:00,5,60.00,1000.00",
    ]


async def test_the_overdue_period_is_the_merchants_setting_fixed_at_charge_time(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    await overdue.set_overdue_days(merchant, 7, actor="staff:1")
    await buy(shop, "p1", 1_000, credit_fen=1_000)
    await overdue.set_overdue_days(merchant, 60, actor="staff:1")
    await buy(shop, "p2", 2_000, credit_fen=2_000)
    found = await overdue.overdue(merchant, NOW + 8 * DAY, scope=Scope(merchant.id, None))
    assert [(r.member_id, r.overdue_fen, r.oldest_due_at, r.days_overdue) for r in found] == [
        (member.id, 1_000, NOW + 7 * DAY, 1)
    ]
    logs = await AuditLog.filter(action="credit.settings").order_by("id").values_list("detail", flat=True)
    assert logs == [
        {"overdue_days": 7, "previous_overdue_days": 30},
        {"overdue_days": 60, "previous_overdue_days": 7},
    ]
    with pytest.raises(ValidationError):
        await overdue.set_overdue_days(merchant, 0, actor="staff:1")


async def run_audit(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "audit",
        "credit",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_audit_command_exits_1_on_a_corrupted_account(shop: Any, settings: Settings) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    await buy(shop, "p1", 4_000, credit_fen=4_000)
    code, out = await run_audit(settings)
    assert (code, out.strip()) == (0, "audit credit: 0 mismatches")
    await CreditAccount.filter(member_id=member.id).update(balance_fen=3_000)  # by hand, around the writer
    code, out = await run_audit(settings, "--merchant", merchant.slug)
    assert code == 1 and "owed = sum of the ledger expected 4000, found 3000" in out
    await CreditAccount.filter(member_id=member.id).update(balance_fen=4_000, limit_fen=9_000)
    assert {m.check for m in await audit_credit(merchant.id)} == {"limit = the last entry's limit"}
    await CreditAccount.filter(member_id=member.id).update(limit_fen=10_000)
    assert await audit_credit() == []
    stray = await CreditEntry.create(  # a row written around the writer, its running balance wrong
        merchant_id=merchant.id, member_id=member.id, kind=CreditKind.REPAY, amount_fen=-1_000,
        balance_after=4_000, limit_after=10_000, idempotency_key="by-hand", created_at=NOW,
    )  # fmt: skip
    found = {(m.check, m.expected, m.actual) for m in await audit_credit(merchant.id)}
    assert found == {
        ("owed = sum of the ledger", 3_000, 4_000),
        (f"entry {stray.id} (repay): balance_after = running sum, within 0..10000", 3_000, 4_000),
    }


async def test_a_purchase_on_credit_costs_no_round_trip_more(
    shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The till's hot path stays one context read and one `memberbot_till_purchase` call with credit:
    the charge is written inside that call, no statement is added."""
    from tortoise import connections

    await limit(shop, 50_000)
    await buy(shop, "warm", 1_000)  # configuration cached, accounts opened
    await buy(shop, "warm-credit", 1_000, credit_fen=1_000)
    client = type(connections.get("default"))
    statements: list[str] = []
    for name in ("execute_query", "execute_query_dict", "execute_insert", "execute_many", "execute_script"):
        original = getattr(client, name)

        def counted(self: Any, query: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            statements.append(query)
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(client, name, counted)
    await buy(shop, "plain", 2_000)
    plain = len(statements)
    statements.clear()
    await buy(shop, "on-credit", 2_000, credit_fen=1_500)
    assert len(statements) == plain, statements  # (outside a request the configuration is read again)
    assert [q for q in statements if "credit" in q] == [q for q in statements if "ctx_credit_limit" in q]
    assert "memberbot_till_purchase" in statements[-1] and "ctx_credit_limit" in statements[-2]
