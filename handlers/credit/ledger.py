"""Credit (信用额度 / 赊账): a manager sets a member's limit, the till charges part of a purchase to it
(`handlers.till.purchase`, in the purchase's one call) and takes repayments, a refund reverses the charge.

Every change is one call of a `memberbot_credit_*` function (migration 0019), the credit ledger's one
writer: it locks the member's `credit_account` row, replays an idempotency key already used, and never
lets the owed balance exceed the limit, go below zero, or the limit drop below what is owed. Here the
outcomes become results or errors, and a limit change is audit-logged in the same transaction.

Policy: a blocked member cannot put anything on credit (the till refuses their purchase whole,
`handlers.till.context.member_refusal`) but may still repay. A refund takes back what is still owed of
the purchase's charge; what the member already repaid of it is theirs again, returned in cash
(`cash_back_fen`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import DomainError, ErrorCode, IdempotencyMismatch, NotFound, ValidationError
from models.credit import CreditAccount, CreditEntry, CreditKind
from models.merchant import Merchant

MAX_LIMIT_FEN = 10**10  # 100 million yuan
MAX_KEY = 128
MAX_REASON = 200
PAYMENT_METHODS = ("cash", "wechat", "alipay", "card", "other")
KIND_LABELS = {
    CreditKind.CHARGE: "赊账消费",
    CreditKind.REPAY: "还款",
    CreditKind.LIMIT_CHANGE: "调整额度",
    CreditKind.REVERSAL: "退款冲销",
}
_METHOD_LABELS = {"cash": "现金", "wechat": "微信", "alipay": "支付宝", "card": "银行卡", "other": "其他"}


class Outcome(StrEnum):
    DONE = "done"
    REPLAY = "replay"
    UNCHANGED = "unchanged"
    NO_MEMBER = "no_member"
    BELOW_OWED = "below_owed"
    OVER_OWED = "over_owed"
    OVER_LIMIT = "over_limit"
    NO_CHARGE = "no_charge"


class CreditLimitExceeded(DomainError):
    """Refused: the charge would take what is owed above the limit; nothing changed."""

    code = ErrorCode.CREDIT_LIMIT_EXCEEDED

    def __init__(self, amount_fen: int, available_fen: int) -> None:
        super().__init__(
            f"信用额度不足：本次赊账 {yuan(amount_fen)} 元，可用额度 {yuan(available_fen)} 元",
            field="credit_fen",
        )
        self.available_fen = available_fen


class LimitBelowOwed(DomainError):
    """Refused: a limit below what the member owes now; nothing changed."""

    code = ErrorCode.CREDIT_BELOW_OWED

    def __init__(self, owed_fen: int) -> None:
        super().__init__(
            f"信用额度 limit_fen 不能低于会员当前欠款 {yuan(owed_fen)} 元，请先还款再调低额度",
            field="limit_fen",
        )
        self.owed_fen = owed_fen


class Overpaid(DomainError):
    """Refused: a repayment above what is owed; nothing changed."""

    code = ErrorCode.CREDIT_OVERPAID

    def __init__(self, owed_fen: int) -> None:
        super().__init__(f"还款金额 amount_fen 超过欠款：当前欠款 {yuan(owed_fen)} 元", field="amount_fen")
        self.owed_fen = owed_fen


@dataclass(frozen=True, slots=True)
class Account:
    limit_fen: int
    owed_fen: int

    @property
    def available_fen(self) -> int:
        return max(self.limit_fen - self.owed_fen, 0)


@dataclass(frozen=True, slots=True)
class LimitChange:
    member_id: int
    limit_fen: int
    previous_limit_fen: int
    owed_fen: int
    entry_id: int | None  # None: the limit already was this (nothing written)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Repayment:
    entry_id: int
    member_id: int
    amount_fen: int
    owed_fen: int
    limit_fen: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Reversal:
    charged_fen: int
    reversed_fen: int  # what was still owed of the charge, taken off the balance

    @property
    def cash_back_fen(self) -> int:
        """What the member had already repaid of the charge: returned in cash."""
        return self.charged_fen - self.reversed_fen


def yuan(fen: int) -> str:
    return f"{fen / 100:.2f}"


def charge_key(purchase_key: str) -> str:
    """The idempotency key of a purchase's credit charge (the purchase's own key, namespaced)."""
    return f"purchase:{purchase_key}:credit"


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY:
        raise ValidationError(f"idempotency_key 须为 1–{MAX_KEY} 个字符", field="idempotency_key")


def _check_reason(reason: str) -> str:
    text = reason.strip()
    if len(text) > MAX_REASON or any(ord(ch) < 0x20 for ch in text):
        raise ValidationError(f"reason 须为不超过 {MAX_REASON} 个字符的单行文字", field="reason")
    return text


async def _entry(merchant_id: int, entry_id: int) -> CreditEntry:
    return await CreditEntry.get(id=entry_id, merchant_id=merchant_id)


_SET_LIMIT_SQL = """
SELECT outcome, entry_id, balance_fen, limit_fen, previous_limit
  FROM memberbot_credit_set_limit(:merchant, :member, :limit, :key, :staff, :actor, :reason, :now)
"""


async def set_limit(
    merchant: Merchant,
    member_id: int,
    limit_fen: int,
    *,
    key: str,
    now: datetime,
    actor: str,
    staff_id: int | None = None,
    reason: str = "",
) -> LimitChange:
    """Set the member's credit limit (0 closes it to new charges). Lowering it below what the member owes
    is refused (`LimitBelowOwed`, 409). The change and its audit-log row commit together; the same key
    again replays the change, for another member or limit it is a 409."""
    if not 0 <= limit_fen <= MAX_LIMIT_FEN:
        raise ValidationError(f"limit_fen 须在 0 到 {MAX_LIMIT_FEN} 之间", field="limit_fen")
    check_key(key)
    text = _check_reason(reason)
    async with in_transaction():
        row = (
            await queries.fetch_rows(
                _SET_LIMIT_SQL,
                merchant=merchant.id,
                member=member_id,
                limit=limit_fen,
                key=key,
                staff=staff_id,
                actor=actor,
                reason=text or f"信用额度调整为 {yuan(limit_fen)} 元",
                now=now,
            )
        )[0]
        outcome = Outcome(row["outcome"])
        if outcome is Outcome.NO_MEMBER:
            raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
        if outcome is Outcome.BELOW_OWED:
            raise LimitBelowOwed(int(row["balance_fen"]))
        if outcome is Outcome.REPLAY:
            entry = await _entry(merchant.id, int(row["entry_id"]))
            if (entry.member_id, entry.kind, entry.limit_after) != (
                member_id,
                CreditKind.LIMIT_CHANGE,
                limit_fen,
            ):
                raise IdempotencyMismatch()
            before = await entries(merchant.id, member_id).filter(id__lt=entry.id).order_by("-id").first()
            previous = before.limit_after if before is not None else 0
            return LimitChange(member_id, limit_fen, previous, entry.balance_after, entry.id, replayed=True)
        change = LimitChange(
            member_id,
            int(row["limit_fen"]),
            int(row["previous_limit"]),
            int(row["balance_fen"]),
            int(row["entry_id"]) if row["entry_id"] is not None else None,
        )
        if outcome is Outcome.DONE:
            await audit_log.record(
                merchant.id,
                actor,
                "credit.limit",
                f"member:{member_id}",
                limit_fen=change.limit_fen,
                previous_limit_fen=change.previous_limit_fen,
                owed_fen=change.owed_fen,
                reason=text,
                entry_id=change.entry_id,
            )
    return change


_REPAY_SQL = """
SELECT outcome, entry_id, balance_fen, limit_fen
  FROM memberbot_credit_repay(:merchant, :member, :amount, :key, :staff, :store, :actor, :reason, :now)
"""


async def repay(
    merchant: Merchant,
    member_id: int,
    amount_fen: int,
    *,
    key: str,
    payment_method: str,
    now: datetime,
    actor: str,
    staff_id: int | None = None,
    store_id: int | None = None,
) -> Repayment:
    """The member pays back `amount_fen` of what they owe (at most all of it: `Overpaid`, 409)."""
    if not 0 < amount_fen <= MAX_LIMIT_FEN:
        raise ValidationError(f"amount_fen 须在 1 到 {MAX_LIMIT_FEN} 之间", field="amount_fen")
    check_key(key)
    if payment_method not in PAYMENT_METHODS:
        raise ValidationError(
            f"payment_method 须为以下之一：{'、'.join(PAYMENT_METHODS)}", field="payment_method"
        )
    row = (
        await queries.fetch_rows(
            _REPAY_SQL,
            merchant=merchant.id,
            member=member_id,
            amount=amount_fen,
            key=key,
            staff=staff_id,
            store=store_id,
            actor=actor,
            reason=f"还款 {yuan(amount_fen)} 元（{_METHOD_LABELS[payment_method]}）",
            now=now,
        )
    )[0]
    outcome = Outcome(row["outcome"])
    if outcome is Outcome.NO_MEMBER:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    if outcome is Outcome.OVER_OWED:
        raise Overpaid(int(row["balance_fen"]))
    entry_id = int(row["entry_id"])
    if outcome is Outcome.REPLAY:
        entry = await _entry(merchant.id, entry_id)
        if (entry.member_id, entry.kind, entry.amount_fen) != (member_id, CreditKind.REPAY, -amount_fen):
            raise IdempotencyMismatch()
        return Repayment(
            entry_id, member_id, amount_fen, entry.balance_after, entry.limit_after, replayed=True
        )
    return Repayment(entry_id, member_id, amount_fen, int(row["balance_fen"]), int(row["limit_fen"]))


_REVERSE_SQL = """
SELECT outcome, entry_id, charged_fen, reversed_fen, balance_fen
  FROM memberbot_credit_reverse(:merchant, :charge_key, :key, :staff, :actor, :reason, :now)
"""


async def reverse_charge(
    merchant_id: int, purchase_key: str, *, key: str, now: datetime, actor: str, staff_id: int | None
) -> Reversal | None:
    """Reverse a refunded purchase's credit charge (None: it had none). Call it in the refund's
    transaction; the same `key` again replays the first reversal."""
    row = (
        await queries.fetch_rows(
            _REVERSE_SQL,
            merchant=merchant_id,
            charge_key=charge_key(purchase_key),
            key=key,
            staff=staff_id,
            actor=actor,
            reason="消费退款，冲销赊账",
            now=now,
        )
    )[0]
    if Outcome(row["outcome"]) is Outcome.NO_CHARGE:
        return None
    return Reversal(int(row["charged_fen"]), int(row["reversed_fen"]))


async def balance(merchant_id: int, member_id: int) -> Account:
    account = await CreditAccount.get_or_none(merchant_id=merchant_id, member_id=member_id)
    return Account(account.limit_fen, account.balance_fen) if account else Account(0, 0)


def entries(merchant_id: int, member_id: int) -> QuerySet[CreditEntry]:
    """The member's credit ledger (order it: newest first is `-id`)."""
    return CreditEntry.filter(merchant_id=merchant_id, member_id=member_id)
