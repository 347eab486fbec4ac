"""Blocking a member (冻结): a blocked member cannot earn, spend or redeem until a manager unblocks them.

Each path refuses once, where it already holds the member, with `MemberBlocked` (409 `member_blocked`,
the same Chinese sentence for the cashier and the member; the chat answers with the `member_blocked`
reply):

- the till purchase (`handlers.till.context.member_refusal`, which every purchase passes first) — and
  with it the points offset, the coupon, the stored-value payment, the part on credit and the points it
  would earn;
- every mall order — redemption, flash sale, group deal (`handlers.mall.orders.place_order_once`) —
  and the staff's pick-up verification (`handlers.mall.catalogue.verify_pickup`);
- check-in (`memberbot_check_in`, migration 0013) and make-ups, a stored-value top-up, buying a tier;
- registration and profile bonuses, referral awards and birthday gifts are not given to a blocked
  member, nor later.

Not refused: refunds (they return what the member paid), credit repayments, the expiry job, a
manager's manual points grant and stored-value adjustment or withdrawal (deliberate, audited acts),
service-card uses (a service already paid for), and everything the member or the merchant reads.
Blocking and unblocking are audit-logged (`member.block`, `member.unblock`) with the reason.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import DomainError, ErrorCode, ValidationError
from handlers.members import lookup as members
from models.member import Member
from models.merchant import Merchant

MAX_REASON = 200
BLOCKED_MESSAGE = "该会员账户已冻结，暂不能积分、消费或兑换，如有疑问请联系商家"


class MemberBlocked(DomainError):
    """The member is blocked: nothing was earned, spent or redeemed (409)."""

    code = ErrorCode.MEMBER_BLOCKED

    def __init__(self) -> None:
        super().__init__(BLOCKED_MESSAGE, field="member")


def is_blocked(member: Member) -> bool:
    return member.blocked_at is not None


def ensure_active(member: Member) -> None:
    """Refuse a blocked member (`MemberBlocked`)."""
    if member.blocked_at is not None:
        raise MemberBlocked()


def _reason(raw: str) -> str:
    reason = raw.strip()
    if not 1 <= len(reason) <= MAX_REASON or any(ord(ch) < 0x20 for ch in reason):
        raise ValidationError(f"冻结原因 reason 须为 1–{MAX_REASON} 个字符的单行文字", field="reason")
    return reason


async def block(merchant: Merchant, member_id: int, *, reason: str, actor: str, now: datetime) -> Member:
    """Block the member with a reason; blocking a blocked member changes nothing (and logs nothing)."""
    reason = _reason(reason)
    async with in_transaction():
        member = await members.resolve(merchant, member_id=member_id)
        if await Member.filter(id=member.id, blocked_at=None).update(blocked_at=now, blocked_reason=reason):
            member.blocked_at, member.blocked_reason = now, reason
            await audit_log.record(
                merchant.id, actor, "member.block", f"member:{member.id}", code=member.code, reason=reason
            )
    return member


async def unblock(merchant: Merchant, member_id: int, *, actor: str) -> Member:
    """Lift the block; unblocking a member who is not blocked changes nothing."""
    async with in_transaction():
        member = await members.resolve(merchant, member_id=member_id)
        if member.blocked_at is not None and await Member.filter(
            id=member.id, blocked_at=member.blocked_at
        ).update(blocked_at=None, blocked_reason=""):
            await audit_log.record(
                merchant.id,
                actor,
                "member.unblock",
                f"member:{member.id}",
                code=member.code,
                blocked_at=member.blocked_at.isoformat(),
                reason=member.blocked_reason,
            )
            member.blocked_at, member.blocked_reason = None, ""
    return member
