"""Group deals (拼团): a member starts a group, others join; it fills or fails, and refunds once.

Every member's order is placed when they join (points and stock are taken then), as a
`PENDING_GROUP` order without a pick-up code. Joins lock the group row, so concurrent joins for the
last seat are serialized and exactly one wins; the join that fills the group marks it FILLED in the
same transaction and gives every member's order its pick-up code (`catalogue.open_pickup`). The expiry job
fails OPEN groups past `expires_at` and returns every order (`catalogue.return_order`, reason
`group_refund`: points and stock back exactly once), all in one transaction per group.

An admin may edit a deal (everything before it starts, only its end once started) or end it now: the
deal is withdrawn (`active` false: no group starts or joins from the commit on) and its open groups
expire at that moment, then fail through the expiry path above (the cron retries any this misses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.mall import catalogue
from handlers.notices.delivery import tell
from models.mall import DealGroup, GroupDeal, GroupStatus, MallItem, MallOrder, OrderStatus
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount

MAX_GROUP_SIZE = 100
MAX_HOURS = 30 * 24
MAX_POINTS = 10_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DealSpec:
    item_id: int
    price_points: int
    group_size: int
    hours: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class DealChanges:
    """An admin's edit of a deal: the fields given (None: unchanged)."""

    price_points: int | None = None
    group_size: int | None = None
    hours: int | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    deal: GroupDeal
    failed_groups: int
    refunded_orders: int


@dataclass(frozen=True, slots=True)
class Joined:
    group: DealGroup
    order: MallOrder
    replayed: bool


@dataclass(frozen=True, slots=True)
class GroupMember:
    name: str
    leader: bool
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class GroupView:
    group: DealGroup
    deal: GroupDeal
    members: list[GroupMember]
    seconds_left: int


# Admin ---------------------------------------------------------------------------------------------


def _check_spec(spec: DealSpec, now: datetime) -> None:
    if not 0 < spec.price_points <= MAX_POINTS:
        raise ValidationError(f"积分价须在 1 到 {MAX_POINTS} 之间", field="price_points")
    if not 2 <= spec.group_size <= MAX_GROUP_SIZE:
        raise ValidationError(f"成团人数须在 2 到 {MAX_GROUP_SIZE} 之间", field="group_size")
    if not 0 < spec.hours <= MAX_HOURS:
        raise ValidationError(f"成团时限须在 1 到 {MAX_HOURS} 小时之间", field="hours")
    catalogue.check_campaign_window(spec.starts_at, spec.ends_at, now)


async def create_deal(merchant_id: int, spec: DealSpec, *, now: datetime, actor: str) -> GroupDeal:
    _check_spec(spec, now)
    item = await MallItem.get_or_none(id=spec.item_id, merchant_id=merchant_id)
    if item is None:
        raise NotFound("商品不存在", field="item_id")
    if not item.active:
        raise Conflict("商品已下架", field="item_id")
    async with in_transaction():
        deal = await GroupDeal.create(
            merchant_id=merchant_id,
            item_id=item.id,
            price_points=spec.price_points,
            group_size=spec.group_size,
            hours=spec.hours,
            starts_at=spec.starts_at,
            ends_at=spec.ends_at,
        )
        await audit_log.record(
            merchant_id,
            actor,
            "group_deal.create",
            f"group_deal:{deal.id}",
            item_id=item.id,
            group_size=spec.group_size,
            hours=spec.hours,
        )
    return deal


_SPEC_FIELDS = ("price_points", "group_size", "hours", "starts_at", "ends_at")
RUNNING_FIXED = {
    "price_points": "积分价",
    "group_size": "成团人数",
    "hours": "成团时限",
    "starts_at": "开始时间",
}


def _edited(deal: GroupDeal, changes: DealChanges) -> DealSpec:
    values = {name: getattr(changes, name) for name in _SPEC_FIELDS}
    merged = {name: getattr(deal, name) if value is None else value for name, value in values.items()}
    return DealSpec(item_id=deal.item_id, **merged)


def _check_edit(deal: GroupDeal, spec: DealSpec, now: datetime) -> None:
    """Before the start everything may change; once started only the end (still in the future)."""
    if not deal.active or now >= deal.ends_at:
        raise Conflict("拼团活动已结束，不能再修改", field="group_deal")
    if now < deal.starts_at:
        _check_spec(spec, now)
        return
    for name, label in RUNNING_FIXED.items():
        if getattr(spec, name) != getattr(deal, name):
            raise Conflict(f"拼团已开始，{label}不能再修改", field=name)
    if spec.ends_at.utcoffset() is None:
        raise ValidationError("时间须带时区", field="ends_at")
    if spec.ends_at <= now:
        raise ValidationError("结束时间须晚于现在；要马上结束请用“立即结束”", field="ends_at")


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


async def _locked(merchant_id: int, deal_id: int) -> GroupDeal:
    deal = await GroupDeal.select_for_update().get_or_none(id=deal_id, merchant_id=merchant_id)
    if deal is None:
        raise NotFound("拼团活动不存在", field="group_deal")
    return deal


async def update_deal(
    merchant_id: int, deal_id: int, changes: DealChanges, *, now: datetime, actor: str
) -> GroupDeal:
    """Edit a deal (`_check_edit` says what may change when); groups already started keep their terms."""
    async with in_transaction():
        deal = await _locked(merchant_id, deal_id)
        spec = _edited(deal, changes)
        _check_edit(deal, spec, now)
        diff = {n: [_plain(getattr(deal, n)), _plain(getattr(spec, n))] for n in _SPEC_FIELDS}
        diff = {name: pair for name, pair in diff.items() if pair[0] != pair[1]}
        if diff:
            for name in _SPEC_FIELDS:
                setattr(deal, name, getattr(spec, name))
            await deal.save(update_fields=list(_SPEC_FIELDS))
            await audit_log.record(merchant_id, actor, "group_deal.update", f"group_deal:{deal.id}", **diff)
    return deal


async def end_deal(merchant_id: int, deal_id: int, *, now: datetime, actor: str, effects: Effects) -> Ended:
    """End a deal now: withdrawn in one transaction with its open groups' expiry set to `now`, then each
    open group fails and refunds once through the expiry job's path."""
    async with in_transaction():
        deal = await _locked(merchant_id, deal_id)
        if not deal.active or now >= deal.ends_at:
            raise Conflict("拼团活动已结束", field="group_deal")
        ends_before = deal.ends_at
        deal.active, deal.starts_at, deal.ends_at = False, min(deal.starts_at, now), now
        await deal.save(update_fields=["active", "starts_at", "ends_at"])
        open_ids: list[int] = (
            await DealGroup.filter(  # type: ignore[assignment]
                deal_id=deal.id, status=GroupStatus.OPEN
            )
            .order_by("id")
            .values_list("id", flat=True)
        )
        await DealGroup.filter(id__in=open_ids, status=GroupStatus.OPEN).update(expires_at=now)
        await audit_log.record(
            merchant_id,
            actor,
            "group_deal.end",
            f"group_deal:{deal.id}",
            ends_at=[ends_before.isoformat(), now.isoformat()],
            open_groups=len(open_ids),
        )
    failed = await _fail_groups(open_ids, now, effects)
    return Ended(deal, failed["failed_groups"], failed["refunded_orders"])


async def list_deals(merchant_id: int, *, live_at: datetime | None = None) -> list[GroupDeal]:
    """The merchant's deals, soonest first (only active ones open at `live_at`, if given)."""
    query = GroupDeal.filter(merchant_id=merchant_id)
    if live_at is not None:
        query = query.filter(active=True, starts_at__lte=live_at, ends_at__gt=live_at)
    return await query.order_by("starts_at", "id").prefetch_related("item")


# Starting and joining -------------------------------------------------------------------------------


async def _replay(merchant_id: int, key: str) -> Joined | None:
    order = await MallOrder.get_or_none(merchant_id=merchant_id, idempotency_key=key)
    if order is None or order.group_id is None:
        return None
    return Joined(await DealGroup.get(id=order.group_id), order, replayed=True)


async def start_group(merchant: Merchant, member: Member, deal_id: int, *, key: str, now: datetime) -> Joined:
    """Open a group with `member` as its leader and first member (their order is placed now)."""
    order_key = f"group:{deal_id}:{member.id}:{key}"
    if (replayed := await _replay(merchant.id, order_key)) is not None:
        return replayed
    deal = await GroupDeal.get_or_none(id=deal_id, merchant_id=merchant.id)
    if deal is None:
        raise NotFound("拼团活动不存在", field="group_deal")
    _check_startable(deal, now)
    item = await MallItem.get(id=deal.item_id)
    try:
        async with in_transaction():
            # Checked again under the deal's lock: a group never starts after `end_deal` listed the
            # deal's open groups.
            deal = await GroupDeal.select_for_update().get(id=deal.id)
            _check_startable(deal, now)
            group = await DealGroup.create(
                merchant_id=merchant.id,
                deal_id=deal.id,
                leader_id=member.id,
                joined=1,
                expires_at=now + timedelta(hours=deal.hours),
            )
            order = await catalogue.place_order(
                merchant,
                member,
                item,
                qty=1,
                points=deal.price_points,
                key=order_key,
                now=now,
                group_id=group.id,
                status=OrderStatus.PENDING_GROUP,
            )
            if order.group_id != group.id:
                raise _LostRace  # a concurrent request with this key placed it: drop this group
    except _LostRace:
        return Joined(await DealGroup.get(id=order.group_id), order, replayed=True)
    return Joined(group, order, replayed=False)


class _LostRace(Exception):
    pass


def _check_startable(deal: GroupDeal, now: datetime) -> None:
    if now < deal.starts_at:
        raise Conflict("拼团活动尚未开始", field="group_deal")
    if not deal.active or now >= deal.ends_at:
        raise Conflict("拼团活动已结束", field="group_deal")


async def join_group(
    merchant: Merchant, member: Member, group_id: int, *, key: str, now: datetime, effects: Effects
) -> Joined:
    """Join an open group; the member who fills it opens every member's pick-up."""
    async with in_transaction():
        group = await DealGroup.select_for_update().get_or_none(id=group_id, merchant_id=merchant.id)
        if group is None:
            raise NotFound("拼团不存在", field="group")
        order_key = f"join:{group.id}:{member.id}:{key}"
        if (replayed := await _replay(merchant.id, order_key)) is not None:
            return Joined(group, replayed.order, replayed=True)
        deal = await GroupDeal.get(id=group.deal_id)
        _check_joinable(group, deal, now)
        if await MallOrder.exists(group_id=group.id, member_id=member.id):
            raise Conflict("你已经在这个团里了", field="group")
        item = await MallItem.get(id=deal.item_id)
        order = await catalogue.place_order(
            merchant,
            member,
            item,
            qty=1,
            points=deal.price_points,
            key=order_key,
            now=now,
            group_id=group.id,
            status=OrderStatus.PENDING_GROUP,
        )
        group.joined += 1
        if group.joined >= deal.group_size:
            group.status, group.closed_at = GroupStatus.FILLED, now
        await group.save(update_fields=["joined", "status", "closed_at"])
        if group.status is GroupStatus.FILLED:
            for order_id in await _order_ids(group.id):
                await catalogue.open_pickup(order_id, now=now)
            order = await MallOrder.get(id=order.id)
    if group.status is GroupStatus.FILLED:
        await _tell_filled(effects, merchant, group)
    return Joined(group, order, replayed=False)


async def _tell_filled(effects: Effects, merchant: Merchant, group: DealGroup) -> None:
    item = await MallItem.get(id=(await GroupDeal.get(id=group.deal_id)).item_id)
    for order in await MallOrder.filter(group_id=group.id).order_by("id"):
        await tell(
            effects,
            "group_filled",
            merchant_id=merchant.id,
            member_id=order.member_id,
            event_key=f"group:{group.id}",
            context={"item": item.name, "code": order.open_pickup_code or ""},
        )


def _check_joinable(group: DealGroup, deal: GroupDeal, now: datetime) -> None:
    if group.status == GroupStatus.FILLED:
        raise Conflict("这个团已经满员", field="group")
    if group.status != GroupStatus.OPEN or now >= group.expires_at:
        raise Conflict("这个团已过期", field="group")
    if not deal.active:
        raise Conflict("拼团活动已下架", field="group")
    if group.joined >= deal.group_size:
        raise Conflict("这个团已经满员", field="group")


async def _order_ids(group_id: int) -> list[int]:
    ids: list[int] = (
        await MallOrder.filter(group_id=group_id)
        .order_by("id")
        .values_list(  # type: ignore[assignment]
            "id", flat=True
        )
    )
    return ids


def _masked(name: str | None) -> str:
    return f"{name[0]}*" if name else "会员"


async def view_group(merchant_id: int, group_id: int, *, now: datetime) -> GroupView:
    group = await DealGroup.get_or_none(id=group_id, merchant_id=merchant_id)
    if group is None:
        raise NotFound("拼团不存在", field="group")
    deal = await GroupDeal.get(id=group.deal_id).prefetch_related("item")
    orders = await MallOrder.filter(group_id=group.id).order_by("id").prefetch_related("member")
    members = [
        GroupMember(_masked(o.member.name), o.member_id == group.leader_id, o.created_at) for o in orders
    ]
    left = int((group.expires_at - now).total_seconds()) if group.status == GroupStatus.OPEN else 0
    return GroupView(group, deal, members, max(left, 0))


# The expiry job -------------------------------------------------------------------------------------


async def expire_groups(now: datetime, effects: Effects) -> dict[str, int]:
    """OPEN groups past `expires_at` fail; each member's order is returned once. Idempotent."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    due: list[int] = (
        await DealGroup.filter(  # type: ignore[assignment]
            status=GroupStatus.OPEN, expires_at__lte=now
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    return await _fail_groups(due, now, effects)


async def _fail_groups(group_ids: list[int], now: datetime, effects: Effects) -> dict[str, int]:
    """Fail each group that is still OPEN and expired at `now`, returning its orders once."""
    failed = refunded = 0
    for group_id in group_ids:
        try:
            returned = await _fail(group_id, now)
        except Exception:  # one group's failure must not hold back everyone else's refunds
            log.exception("failing a group deal failed", extra={"group_id": group_id})
            continue
        if returned is not None:
            failed += 1
            refunded += returned
            await _tell_refunded(effects, group_id)
    return {"failed_groups": failed, "refunded_orders": refunded}


async def _tell_refunded(effects: Effects, group_id: int) -> None:
    group = await DealGroup.get(id=group_id)
    item = await MallItem.get(id=(await GroupDeal.get(id=group.deal_id)).item_id)
    for order in await MallOrder.filter(group_id=group_id).order_by("id"):
        await tell(
            effects,
            "group_refunded",
            merchant_id=group.merchant_id,
            member_id=order.member_id,
            event_key=f"group:{group_id}",
            context={"item": item.name, "points": order.points},
        )


async def _fail(group_id: int, now: datetime) -> int | None:
    async with in_transaction():
        group = await DealGroup.select_for_update().get(id=group_id)
        if group.status != GroupStatus.OPEN or group.expires_at > now:
            return None  # filled or failed meanwhile
        group.status, group.closed_at = GroupStatus.FAILED, now
        await group.save(update_fields=["status", "closed_at"])
        order_ids = await _order_ids(group.id)
        # Lock every member's points account up front, in id order, before any return takes the item's
        # row lock: otherwise a member redeeming the same item meanwhile (account → item) and this
        # refund (item → next account) could wait on each other.
        members = await MallOrder.filter(id__in=order_ids).values_list("member_id", flat=True)
        accounts = PointsAccount.select_for_update().filter(member_id__in=sorted(set(members)))
        await accounts.order_by("member_id")
        for order_id in order_ids:
            await catalogue.return_order(order_id, reason="group_refund", now=now, actor="system")
    return len(order_ids)
