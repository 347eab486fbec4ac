"""The stored-value ledger: top-up bonus, principal-first payment, refund once, mall credit, admin
adjustments, concurrency and the audit (also through `memberbot audit stored-value`)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from handlers.core.errors import Conflict, DomainError, ErrorCode, NotFound
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import tiers
from handlers.wallet import ledger as wallet
from handlers.wallet.audit import audit_wallet
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.wallet import WalletAccount, WalletKind, WalletTransaction
from tests.conftest import SECRET
from tests.support.factories import EFFECTS, make_member, make_merchant

NOW = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
BONUS = {
    "stored_value": {
        "bonus_tiers": [{"min_fen": 10_000, "bonus_fen": 2_000}, {"min_fen": 50_000, "bonus_fen": 12_000}]
    }
}


@pytest.fixture
async def shop(client: Any) -> tuple[Merchant, Member]:
    merchant = await make_merchant()
    await loyalty_config.save_program(merchant.id, BONUS, actor="test")
    return merchant, await make_member(merchant)


async def money(member: Member) -> tuple[int, int]:
    account = await WalletAccount.get_or_none(member_id=member.id)
    return (account.principal_fen, account.bonus_fen) if account else (0, 0)


async def top_up(shop: tuple[Merchant, Member], amount: int, key: str) -> wallet.Posting:
    merchant, member = shop
    return await wallet.top_up(
        merchant, member.id, amount, key=key, payment_method="cash", now=NOW, effects=EFFECTS
    )


async def test_top_up_adds_principal_and_the_highest_bonus_reached(shop: Any) -> None:
    first = await top_up(shop, 10_000, "t1")
    assert (first.principal_delta, first.bonus_delta, first.principal_after, first.bonus_after) == (
        10_000,
        2_000,
        10_000,
        2_000,
    )
    await top_up(shop, 60_000, "t2")
    await top_up(shop, 9_999, "t3")
    assert await money(shop[1]) == (79_999, 14_000)
    assert (await WalletAccount.get(member_id=shop[1].id)).lifetime_top_up_fen == 79_999
    assert await audit_wallet() == []


async def test_top_up_replays_its_key_and_refuses_a_different_request(shop: Any) -> None:
    first = await top_up(shop, 10_000, "t1")
    again = await top_up(shop, 10_000, "t1")
    assert again.replayed and again.transaction_id == first.transaction_id
    assert await money(shop[1]) == (10_000, 2_000)
    with pytest.raises(DomainError) as caught:
        await top_up(shop, 20_000, "t1")
    assert caught.value.code == ErrorCode.IDEMPOTENCY_MISMATCH
    assert await WalletTransaction.all().count() == 1


async def test_payment_takes_principal_first_then_bonus(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "t1")  # 100 + 20 bonus
    paid = await wallet.pay(merchant, member.id, 8_000, key="p1", now=NOW, reference="purchase:1", actor="t")
    assert (paid.principal_fen, paid.bonus_fen, paid.principal_after, paid.bonus_after) == (
        8_000,
        0,
        2_000,
        2_000,
    )
    paid = await wallet.pay(merchant, member.id, 3_000, key="p2", now=NOW, reference="purchase:2", actor="t")
    assert (paid.principal_fen, paid.bonus_fen, paid.principal_after, paid.bonus_after) == (
        2_000,
        1_000,
        0,
        1_000,
    )
    replay = await wallet.pay(
        merchant, member.id, 3_000, key="p2", now=NOW, reference="purchase:2", actor="t"
    )
    assert replay.replayed and replay.transaction_id == paid.transaction_id
    assert await money(member) == (0, 1_000)
    assert await audit_wallet() == []


async def test_a_short_balance_is_refused_and_nothing_changes(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "t1")
    with pytest.raises(wallet.NotEnoughBalance) as caught:
        await wallet.pay(merchant, member.id, 12_001, key="p1", now=NOW, reference="", actor="t")
    assert caught.value.code == ErrorCode.INSUFFICIENT_BALANCE and caught.value.available_fen == 12_000
    assert "120.00" in caught.value.message
    assert await money(member) == (10_000, 2_000)
    assert await WalletTransaction.filter(kind=WalletKind.PAY).count() == 0


async def test_refund_gives_the_same_split_back_exactly_once(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "t1")
    await wallet.pay(merchant, member.id, 11_000, key="p1", now=NOW, reference="purchase:1", actor="t")
    back = await wallet.refund_payment(merchant, "p1", key="r1", now=NOW, actor="t")
    assert (back.principal_fen, back.bonus_fen, back.principal_after, back.bonus_after) == (
        10_000,
        1_000,
        10_000,
        2_000,
    )
    again = await wallet.refund_payment(merchant, "p1", key="r1", now=NOW, actor="t")
    assert again.replayed and again.transaction_id == back.transaction_id
    with pytest.raises(Conflict):
        await wallet.refund_payment(merchant, "p1", key="r2", now=NOW, actor="t")
    with pytest.raises(NotFound):
        await wallet.refund_payment(merchant, "t1", key="r3", now=NOW, actor="t")  # a top-up is no payment
    refund = await WalletTransaction.get(id=back.transaction_id)
    assert refund.reverses_id == (await WalletTransaction.get(idempotency_key="p1")).id
    assert await money(member) == (10_000, 2_000)
    assert await audit_wallet() == []


async def test_mall_credit_is_bonus_and_idempotent(shop: Any) -> None:
    merchant, member = shop
    first = await wallet.credit_mall(merchant, member.id, 5_000, key="mall:o1", now=NOW)
    assert await wallet.credit_mall(merchant, member.id, 5_000, key="mall:o1", now=NOW) == first
    assert await money(member) == (0, 5_000)
    assert (await WalletTransaction.get(id=first)).kind == WalletKind.MALL
    with pytest.raises(DomainError):
        await wallet.credit_mall(merchant, member.id, 6_000, key="mall:o1", now=NOW)


async def test_withdraw_pays_back_principal_only_and_adjust_never_goes_negative(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "t1")
    out = await wallet.withdraw(
        merchant, member.id, None, reason="退卡", key="w1", actor="staff:1", now=NOW, effects=EFFECTS
    )
    assert (out.principal_delta, out.bonus_delta) == (-10_000, 0)
    assert await money(member) == (0, 2_000)
    with pytest.raises(wallet.NotEnoughBalance):
        await wallet.withdraw(
            merchant, member.id, 1, reason="再退", key="w2", actor="staff:1", now=NOW, effects=EFFECTS
        )
    with pytest.raises(wallet.NotEnoughBalance):
        await wallet.adjust(
            merchant, member.id, 0, -2_001, reason="纠错", key="a1", actor="staff:1", now=NOW, effects=EFFECTS
        )
    fixed = await wallet.adjust(
        merchant, member.id, 500, -2_000, reason="纠错", key="a2", actor="staff:1", now=NOW, effects=EFFECTS
    )
    assert (fixed.principal_after, fixed.bonus_after) == (500, 0)
    actions = await AuditLog.filter(merchant_id=merchant.id, action__startswith="wallet.").values_list(
        "action", flat=True
    )
    assert sorted(actions) == ["wallet.adjust", "wallet.withdraw"]
    assert await audit_wallet() == []


async def test_pay_inside_a_caller_transaction_rolls_back_with_it(shop: Any) -> None:
    from tortoise.transactions import in_transaction

    merchant, member = shop
    await top_up(shop, 10_000, "t1")
    with pytest.raises(RuntimeError):
        async with in_transaction():
            await wallet.pay(merchant, member.id, 5_000, key="p1", now=NOW, reference="", actor="t")
            raise RuntimeError("the purchase failed")
    assert await money(member) == (10_000, 2_000)
    assert not await WalletTransaction.exists(idempotency_key="p1")


async def test_another_merchants_member_is_not_found(shop: Any) -> None:
    other = await make_merchant("other")
    with pytest.raises(NotFound):
        await wallet.pay(other, shop[1].id, 100, key="x", now=NOW, reference="", actor="t")
    assert not await WalletAccount.exists()


async def test_a_recharge_criterion_upgrades_the_tier(shop: Any) -> None:
    merchant, member = shop
    ladder = [
        {"code": "normal", "name": "普通会员", "rank": 0},
        {
            "code": "vip",
            "name": "储值会员",
            "rank": 1,
            "criteria": {"window_days": 365, "recharge_fen": 50_000},
        },
    ]
    await loyalty_config.save_tiers(merchant.id, ladder, actor="test")
    now = datetime.now(UTC)
    first = await wallet.top_up(
        merchant, member.id, 30_000, key="t1", payment_method="wechat", now=now, effects=EFFECTS
    )
    assert first.tier_changed_to is None and await tiers.tier_code(merchant.id, member.id) == "normal"
    second = await wallet.top_up(
        merchant, member.id, 20_000, key="t2", payment_method="wechat", now=now, effects=EFFECTS
    )
    assert second.tier_changed_to == "vip" and await tiers.tier_code(merchant.id, member.id) == "vip"
    stats = await tiers.window_stats(merchant.id, member.id, 365, now)
    assert stats.recharge_fen == 50_000  # principal only, the bonus does not count


async def test_concurrent_top_ups_and_payments_never_go_negative_or_lose_an_update(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "seed")

    async def one(i: int) -> int:
        if i % 2 == 0:
            posted = await wallet.top_up(
                merchant, member.id, 500, key=f"t{i}", payment_method="cash", now=NOW, effects=EFFECTS
            )
            return posted.principal_delta + posted.bonus_delta
        try:
            paid = await wallet.pay(merchant, member.id, 900, key=f"p{i}", now=NOW, reference="", actor="t")
        except wallet.NotEnoughBalance:
            return 0
        return -(paid.principal_fen + paid.bonus_fen)

    deltas = await asyncio.gather(*(one(i) for i in range(200)))
    principal, bonus = await money(member)
    assert principal >= 0 and bonus >= 0
    assert principal + bonus == 12_000 + sum(deltas)
    assert await WalletTransaction.filter(member_id=member.id).count() == 1 + sum(1 for d in deltas if d)
    assert await audit_wallet() == []


async def test_concurrent_payments_with_one_key_pay_once(shop: Any) -> None:
    merchant, member = shop
    await top_up(shop, 10_000, "seed")
    results = await asyncio.gather(
        *(
            wallet.pay(merchant, member.id, 1_000, key="dup", now=NOW, reference="", actor="t")
            for _ in range(30)
        )
    )
    assert len({r.transaction_id for r in results}) == 1
    assert await money(member) == (9_000, 2_000)


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
        "stored-value",
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
    await top_up(shop, 10_000, "t1")
    code, out = await run_audit(settings)
    assert (code, out.strip()) == (0, "audit stored-value: 0 mismatches")
    await WalletAccount.filter(member_id=member.id).update(principal_fen=9_000)
    code, out = await run_audit(settings, "--merchant", merchant.slug)
    assert code == 1 and "principal = sum of principal deltas expected 10000, found 9000" in out
    await WalletAccount.filter(member_id=member.id).update(principal_fen=-1)
    found = {m.check for m in await audit_wallet(merchant.id)}
    assert found == {"principal = sum of principal deltas", "principal is not negative"}
