"""Pricing at the till: tier discount, then a coupon, then paying part of the rest with points.

Order: the tier discount applies to the order amount (the member pays `discount_percent`% of it,
rounded down in the member's favour); a coupon's discount (computed on that discounted amount, so a
满100减20 threshold is checked against what the member would pay) comes off next; a points offset then
pays part of the rest, capped at the programme's `max_percent` of it. Points are earned on `paid_fen`,
what the member actually paid — in cash or from stored value, which is a way of paying, not a discount.
"""

from __future__ import annotations

from dataclasses import dataclass

from handlers.rules.errors import RuleError
from handlers.rules.program import OffsetPolicy


@dataclass(frozen=True, slots=True)
class Quote:
    amount_fen: int
    discount_fen: int
    offset_points: int
    offset_fen: int
    paid_fen: int
    coupon_fen: int = 0


def after_tier_discount(amount_fen: int, discount_percent: int) -> int:
    if amount_fen < 0:
        raise RuleError("amount_fen", "不能为负数")
    if not 1 <= discount_percent <= 100:
        raise RuleError("discount_percent", "应在 1–100 之间")
    return amount_fen * discount_percent // 100


def price(
    amount_fen: int, discount_percent: int, offset_points: int, offset: OffsetPolicy, *, coupon_fen: int = 0
) -> Quote:
    discounted = after_tier_discount(amount_fen, discount_percent)
    if not 0 <= coupon_fen <= discounted:
        raise RuleError("coupon_code", "优惠券抵扣不能超过订单金额")
    payable = discounted - coupon_fen
    offset_fen = 0
    if offset_points:
        if not offset.enabled:
            raise RuleError("points_offset", "本店未开启积分抵现")
        if offset_points < offset.min_points:
            raise RuleError("points_offset", f"积分抵现最少 {offset.min_points} 积分")
        if offset_points * 100 % offset.points_per_yuan:
            raise RuleError(
                "points_offset", f"积分抵现须为 {offset.points_per_yuan // 100 or 1} 积分的整数倍"
            )
        offset_fen = offset_points * 100 // offset.points_per_yuan
        cap = payable * offset.max_percent // 100
        if offset_fen > cap:
            raise RuleError(
                "points_offset", f"积分最多抵扣订单金额的 {offset.max_percent}%（{cap / 100:.2f} 元）"
            )
    return Quote(
        amount_fen, amount_fen - discounted, offset_points, offset_fen, payable - offset_fen, coupon_fen
    )


def max_offset_points(payable_fen: int, offset: OffsetPolicy) -> int:
    """The most points this order can take (0 if offsets are off or below the minimum)."""
    if not offset.enabled:
        return 0
    cap_fen = payable_fen * offset.max_percent // 100
    points = cap_fen * offset.points_per_yuan // 100
    step = max(offset.points_per_yuan // 100, 1)
    points -= points % step
    return points if points >= offset.min_points else 0
