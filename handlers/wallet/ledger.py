"""Stored value (储值): top-up, payment, refund, mall credit, admin adjustment and cash withdrawal.

Every posting runs in one transaction that locks the member's `WalletAccount` row first (postings on
one member serialize; no lost update), replays an already-used idempotency key instead of posting
twice (the same key for a different request is a 409), writes one append-only `WalletTransaction`
and updates the account so that principal == Σ principal_delta and bonus == Σ bonus_delta.
No posting ever takes principal or bonus below zero (`memberbot audit stored-value` checks it).

Policy (see `handlers.rules.wallet`): a payment spends principal first and bonus last; a refund gives
back exactly the split the payment took; bonus is never paid out in cash (a withdrawal is principal
only); mall credits are bonus (bought with points, not cash).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import (
    Conflict,
    DomainError,
    ErrorCode,
    IdempotencyMismatch,
    NotFound,
    ValidationError,
)
from handlers.core.tasks import Effects, Queued
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import tiers
from handlers.notices.delivery import queue_notice
from handlers.rules.wallet import MAX_TOP_UP_FEN, InsufficientBalance, split_payment, top_up_bonus
from models.merchant import Merchant
from models.wallet import WalletAccount, WalletKind, WalletTransaction

MAX_PAY_FEN = 10**10
MAX_KEY = 128
PAYMENT_METHODS = ("cash", "wechat", "alipay", "card", "other")
KIND_LABELS = {
    WalletKind.TOP_UP: "充值",
    WalletKind.PAY: "消费",
    WalletKind.REFUND: "退款退回",
    WalletKind.WITHDRAW: "退还本金",
    WalletKind.ADJUST: "人工调整",
    WalletKind.MALL: "积分兑换",
    WalletKind.OPENING: "期初储值",
}


@dataclass(frozen=True, slots=True)
class WalletPayment:
    """A payment from the balance (or its refund): the principal and bonus it moved (both ≥ 0)."""

    transaction_id: int
    principal_fen: int
    bonus_fen: int
    principal_after: int
    bonus_after: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Posting:
    transaction_id: int
    member_id: int
    kind: WalletKind
    principal_delta: int
    bonus_delta: int
    principal_after: int
    bonus_after: int
    replayed: bool = False
    tier_changed_to: str | None = None


class NotEnoughBalance(DomainError):
    """Refused: the balance cannot cover the amount; nothing changed. `available_fen` says how much can."""

    code = ErrorCode.INSUFFICIENT_BALANCE

    def __init__(self, message: str, *, available_fen: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.available_fen = available_fen


def yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


def _signed(fen: int) -> str:
    return f"{'+' if fen > 0 else ''}{yuan(fen)}"


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY:
        raise ValidationError(f"idempotency_key 须为 1–{MAX_KEY} 个字符", field="idempotency_key")


def _check_amount(amount_fen: int, top: int, field: str = "amount_fen") -> None:
    if not 0 < amount_fen <= top:
        raise ValidationError(f"{field} 须在 1 到 {top} 之间", field=field)


_ACCOUNT_SQL = "SELECT * FROM memberbot_wallet_account(:merchant, :member)"


async def lock_account(merchant_id: int, member_id: int) -> WalletAccount:
    """The member's wallet row, locked FOR UPDATE in the current transaction (opened if missing)."""
    return await queries.member_row(WalletAccount, _ACCOUNT_SQL, merchant_id, member_id)


async def _existing(merchant_id: int, key: str, member_id: int, kind: WalletKind) -> WalletTransaction | None:
    txn = await WalletTransaction.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    if txn is not None and (txn.member_id != member_id or txn.kind != kind):
        raise IdempotencyMismatch()
    return txn


_POST_SQL = """
SELECT * FROM memberbot_wallet_post(
    :account, :kind, :principal, :bonus, :key, :reference, :actor, :reason, :reverses, :now, :store)
"""


async def _post(
    account: WalletAccount,
    kind: WalletKind,
    principal_delta: int,
    bonus_delta: int,
    key: str,
    *,
    now: datetime,
    reference: str = "",
    actor: str = "system",
    reason: str = "",
    reverses_id: int | None = None,
    store_id: int | None = None,
) -> WalletTransaction:
    """One posting through `memberbot_wallet_post` (migration 0010), the wallet ledger's one writer."""
    principal, bonus = account.principal_fen + principal_delta, account.bonus_fen + bonus_delta
    if principal < 0 or bonus < 0:  # callers check first; the writer refuses it too
        raise NotEnoughBalance("储值余额不足", available_fen=account.principal_fen + account.bonus_fen)
    rows = await queries.fetch_rows(
        _POST_SQL,
        account=account.id,
        kind=kind.value,
        principal=principal_delta,
        bonus=bonus_delta,
        key=key,
        reference=reference,
        actor=actor,
        reason=reason,
        reverses=reverses_id,
        now=now,
        store=store_id,
    )
    if not rows:  # callers replay their own key under the lock first: this one is another member's
        raise IdempotencyMismatch()
    account.principal_fen, account.bonus_fen = principal, bonus
    if kind == WalletKind.TOP_UP:
        account.lifetime_top_up_fen += principal_delta
    return queries.as_model(WalletTransaction, rows[0])


def posting(txn: WalletTransaction, *, replayed: bool = False, tier: str | None = None) -> Posting:
    return Posting(
        txn.id,
        txn.member_id,
        WalletKind(txn.kind),
        txn.principal_delta,
        txn.bonus_delta,
        txn.principal_after,
        txn.bonus_after,
        replayed,
        tier,
    )


def _payment(txn: WalletTransaction, *, replayed: bool = False) -> WalletPayment:
    return WalletPayment(
        txn.id, abs(txn.principal_delta), abs(txn.bonus_delta), txn.principal_after, txn.bonus_after, replayed
    )


async def top_up(
    merchant: Merchant,
    member_id: int,
    amount_fen: int,
    *,
    key: str,
    payment_method: str,
    now: datetime,
    effects: Effects,
    actor: str = "system",
    store_id: int | None = None,
) -> Posting:
    """Add `amount_fen` of principal plus the programme's bonus (highest tier reached, once), recorded
    at `store_id` (the till's store).

    The `wallet.topped_up` effect, queued with it, re-evaluates the member's tier right after commit
    (a recharge criterion may upgrade it).
    """
    _check_amount(amount_fen, MAX_TOP_UP_FEN)
    check_key(key)
    if payment_method not in PAYMENT_METHODS:
        raise ValidationError(
            f"payment_method 须为以下之一：{'、'.join(PAYMENT_METHODS)}", field="payment_method"
        )
    bonus = top_up_bonus(amount_fen, (await loyalty_config.program(merchant.id)).stored_value)
    async with in_transaction():
        account = await lock_account(merchant.id, member_id)
        txn = await _existing(merchant.id, key, member_id, WalletKind.TOP_UP)
        replayed = txn is not None
        if txn is None:
            reason = f"充值 {yuan(amount_fen)} 元" + (f"，赠送 {yuan(bonus)} 元" if bonus else "")
            txn = await _post(
                account,
                WalletKind.TOP_UP,
                amount_fen,
                bonus,
                key,
                now=now,
                reference=payment_method,
                actor=actor,
                reason=reason,
                store_id=store_id,
            )
            queued = [
                await effects.queue(
                    AFTER_TOP_UP,
                    f"topup:{txn.id}",
                    {
                        "merchant_id": merchant.id,
                        "member_id": member_id,
                        "transaction_id": txn.id,
                        "at": now.isoformat(),
                    },
                    merchant_id=merchant.id,
                ),
                await _tell(effects, "wallet_top_up", txn, amount=yuan(amount_fen), bonus=yuan(bonus)),
            ]
        elif txn.principal_delta != amount_fen or txn.reference != payment_method:
            raise IdempotencyMismatch()
        else:
            queued = []
    after = await effects.after_commit(*(q for q in queued if q is not None))
    tier = after[0]["tier_changed_to"] if after and after[0] else None
    return posting(txn, replayed=replayed, tier=tier)


async def _tell(effects: Effects, kind: str, txn: WalletTransaction, **context: object) -> Queued | None:
    """The member's notice of a posting (`handlers.notices.catalog`), queued with it."""
    return await queue_notice(
        effects,
        kind,
        merchant_id=txn.merchant_id,
        member_id=txn.member_id,
        event_key=f"wallet:{txn.id}",
        context={**context, "balance": yuan(txn.principal_after + txn.bonus_after)},
    )


AFTER_TOP_UP = "wallet.topped_up"


async def after_top_up(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The `wallet.topped_up` effect: the tier review a recharge criterion may pass."""
    merchant = await Merchant.get(id=payload["merchant_id"])
    change = await tiers.evaluate(
        merchant,
        payload["member_id"],
        now=datetime.fromisoformat(payload["at"]),
        key=f"topup:{payload['transaction_id']}",
        effects=effects,
    )
    return {"tier_changed_to": change.to_code if change else None}


async def pay(
    merchant: Merchant,
    member_id: int,
    amount_fen: int,
    *,
    key: str,
    now: datetime,
    reference: str,
    actor: str,
) -> WalletPayment:
    """Pay `amount_fen` from the member's balance: principal first, bonus last.

    Call it INSIDE the purchase's transaction (it nests as a savepoint and locks the wallet row).
    Raises NotEnoughBalance (`insufficient_balance`, 409, `available_fen`) and changes nothing when
    principal + bonus is short. A repeated `key` returns the first payment (`replayed=True`); the
    same key for another member or amount is `idempotency_mismatch` (409).
    """
    _check_amount(amount_fen, MAX_PAY_FEN)
    check_key(key)
    async with in_transaction():
        account = await lock_account(merchant.id, member_id)
        txn = await _existing(merchant.id, key, member_id, WalletKind.PAY)
        if txn is not None:
            if -(txn.principal_delta + txn.bonus_delta) != amount_fen:
                raise IdempotencyMismatch()
            return _payment(txn, replayed=True)
        try:
            split = split_payment(account.principal_fen, account.bonus_fen, amount_fen)
        except InsufficientBalance as exc:
            raise NotEnoughBalance(
                f"储值余额不足：需要 {yuan(amount_fen)} 元，可用 {yuan(exc.available_fen)} 元",
                available_fen=exc.available_fen,
                field="amount_fen",
            ) from None
        reason = f"储值消费 {yuan(amount_fen)} 元"
        txn = await _post(
            account,
            WalletKind.PAY,
            -split.principal_fen,
            -split.bonus_fen,
            key,
            now=now,
            reference=reference,
            actor=actor,
            reason=reason,
        )
        return _payment(txn)


async def refund_payment(
    merchant: Merchant, original_key: str, *, key: str, now: datetime, actor: str
) -> WalletPayment:
    """Give a payment back exactly once: the same principal/bonus split it took (`reverses` → it).

    A repeated `key` replays; a second reversal under another key is a Conflict (409); an unknown
    `original_key` is NotFound (404). Safe inside the caller's refund transaction.
    """
    check_key(key)
    original = await WalletTransaction.get_or_none(merchant_id=merchant.id, idempotency_key=original_key)
    if original is None or original.kind != WalletKind.PAY:
        raise NotFound("没有找到这笔储值支付", field="idempotency_key")
    async with in_transaction():
        account = await lock_account(merchant.id, original.member_id)
        txn = await _existing(merchant.id, key, original.member_id, WalletKind.REFUND)
        if txn is not None:
            if txn.reverses_id != original.id:
                raise IdempotencyMismatch()
            return _payment(txn, replayed=True)
        if await WalletTransaction.exists(reverses_id=original.id):
            raise Conflict("这笔储值支付已经退回过了", field="idempotency_key")
        txn = await _post(
            account,
            WalletKind.REFUND,
            -original.principal_delta,
            -original.bonus_delta,
            key,
            now=now,
            reference=original.reference,
            actor=actor,
            reason="消费退款，退回储值",
            reverses_id=original.id,
        )
        return _payment(txn)


async def credit_mall(merchant: Merchant, member_id: int, amount_fen: int, *, key: str, now: datetime) -> int:
    """Credit a stored-value mall item as BONUS (kind `mall`). Idempotent by `key`; returns the
    transaction id (the first one on a replay). Safe inside the caller's transaction."""
    _check_amount(amount_fen, MAX_TOP_UP_FEN)
    check_key(key)
    async with in_transaction():
        account = await lock_account(merchant.id, member_id)
        txn = await _existing(merchant.id, key, member_id, WalletKind.MALL)
        if txn is not None:
            if txn.bonus_delta != amount_fen:
                raise IdempotencyMismatch()
            return int(txn.id)
        txn = await _post(
            account,
            WalletKind.MALL,
            0,
            amount_fen,
            key,
            now=now,
            reference=key[:64],
            reason=f"积分兑换储值 {yuan(amount_fen)} 元",
        )
        return int(txn.id)


async def adjust(
    merchant: Merchant,
    member_id: int,
    principal_delta: int,
    bonus_delta: int,
    *,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    effects: Effects,
) -> Posting:
    """Correct a balance by hand (either part up or down, never below zero), with an audit row and
    the member's notice."""
    if principal_delta == 0 and bonus_delta == 0:
        raise ValidationError("principal_delta 与 bonus_delta 不能都为 0", field="principal_delta")
    for name, delta in (("principal_delta", principal_delta), ("bonus_delta", bonus_delta)):
        if abs(delta) > MAX_TOP_UP_FEN:
            raise ValidationError(f"{name}: 绝对值不超过 {MAX_TOP_UP_FEN}", field=name)
    check_key(key)
    async with in_transaction():
        account = await lock_account(merchant.id, member_id)
        txn = await _existing(merchant.id, key, member_id, WalletKind.ADJUST)
        if txn is not None:
            if (txn.principal_delta, txn.bonus_delta) != (principal_delta, bonus_delta):
                raise IdempotencyMismatch()
            return posting(txn, replayed=True)
        for name, have, delta in (
            ("principal_delta", account.principal_fen, principal_delta),
            ("bonus_delta", account.bonus_fen, bonus_delta),
        ):
            if have + delta < 0:
                raise NotEnoughBalance(
                    f"调整后余额不能为负：当前 {yuan(have)} 元", available_fen=have, field=name
                )
        txn = await _post(
            account, WalletKind.ADJUST, principal_delta, bonus_delta, key, now=now, actor=actor, reason=reason
        )
        await audit_log.record(
            merchant.id,
            actor,
            "wallet.adjust",
            f"member:{member_id}",
            transaction_id=txn.id,
            principal_delta=principal_delta,
            bonus_delta=bonus_delta,
            reason=reason,
        )
        told = await _tell(
            effects, "wallet_changed", txn, reason=reason, change=_signed(principal_delta + bonus_delta)
        )
    await effects.after_commit(*([told] if told else []))
    return posting(txn)


async def withdraw(
    merchant: Merchant,
    member_id: int,
    amount_fen: int | None,
    *,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    effects: Effects,
) -> Posting:
    """Pay principal back to the member in cash (all of it when `amount_fen` is None), with an audit
    row and the member's notice. Bonus is never paid out: it stays on the account, spendable only."""
    if amount_fen is not None:
        _check_amount(amount_fen, MAX_PAY_FEN)
    check_key(key)
    async with in_transaction():
        account = await lock_account(merchant.id, member_id)
        txn = await _existing(merchant.id, key, member_id, WalletKind.WITHDRAW)
        if txn is not None:
            if amount_fen is not None and -txn.principal_delta != amount_fen:
                raise IdempotencyMismatch()
            return posting(txn, replayed=True)
        amount = account.principal_fen if amount_fen is None else amount_fen
        if amount == 0 or amount > account.principal_fen:
            raise NotEnoughBalance(
                f"可退本金不足：可退 {yuan(account.principal_fen)} 元（赠送金额不可退现）",
                available_fen=account.principal_fen,
                field="amount_fen",
            )
        txn = await _post(account, WalletKind.WITHDRAW, -amount, 0, key, now=now, actor=actor, reason=reason)
        await audit_log.record(
            merchant.id,
            actor,
            "wallet.withdraw",
            f"member:{member_id}",
            transaction_id=txn.id,
            principal_fen=amount,
            reason=reason,
        )
        told = await _tell(
            effects, "wallet_changed", txn, reason=reason or "退还本金", change=_signed(-amount)
        )
    await effects.after_commit(*([told] if told else []))
    return posting(txn)


@dataclass(frozen=True, slots=True)
class Balance:
    principal_fen: int
    bonus_fen: int
    lifetime_top_up_fen: int

    @property
    def total_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


async def balance(merchant_id: int, member_id: int) -> Balance:
    account = await WalletAccount.get_or_none(merchant_id=merchant_id, member_id=member_id)
    if account is None:
        return Balance(0, 0, 0)
    return Balance(account.principal_fen, account.bonus_fen, account.lifetime_top_up_fen)


async def recent(merchant_id: int, member_id: int, limit: int = 20) -> list[WalletTransaction]:
    """The member's latest ledger rows, newest first."""
    return (
        await WalletTransaction.filter(merchant_id=merchant_id, member_id=member_id)
        .order_by("-id")
        .limit(limit)
    )
