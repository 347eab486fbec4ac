"""Flash sales (秒杀): a manager allots units of an item to a sale window; members race for them.

A purchase is gated first in Redis by one Lua script (`flash_gate.lua`, run by EVALSHA, loaded on
NOSCRIPT) that takes a unit and the member's per-sale count atomically, or answers sold-out, limit or
duplicate (the idempotency key already holds a unit). Only then is the order written, in one database
transaction that re-checks the member's limit under their account lock, places the order through
`handlers.mall.orders.place_order` (points debited; the stock already moved at allotment) and counts it with
a conditional `sold = sold + 1 where sold < stock` (PostgreSQL is the source of truth). If that write
fails, the reservation goes back to Redis, so the unit can be sold again.

The Redis keys of a sale are rebuilt from the database when they are missing (first use in this Redis,
or Redis restarted empty): units left = stock − units ordered (a returned flash order's units go back
to the item, not to the sale — `mall_orders.return_order` — so `sold` never goes down), per-member
counts from orders not returned (a member who cancelled may buy again), every order key as a held
reservation. A short Redis lock keeps concurrent requests from rebuilding twice.

Lock order follows `handlers.mall.orders`: the member's points account, the item, then the sale row.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from handlers.core import audit_log, config_cache, queries
from handlers.core.errors import Conflict, DomainError, ErrorCode, NotFound, Unauthorized, ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import ledger
from handlers.mall import catalogue
from handlers.mall.orders import RETURNED, local_time
from handlers.notices.delivery import tell
from models.mall import FlashSale, MallItem, MallOrder
from models.member import Member
from models.merchant import Merchant

GATE_SOURCE = Path(__file__).with_name("flash_gate.lua").read_text(encoding="utf-8")
GATE_SHA = hashlib.sha1(GATE_SOURCE.encode(), usedforsecurity=False).hexdigest()  # the script's id
REBUILD_LOCK_MS = 5_000
REBUILD_WAIT_POLLS = 100  # × 20 ms
KEY_TTL_AFTER_END = timedelta(days=1)
MAX_UNITS = 100_000
MAX_POINTS = 10_000_000


class Verdict(StrEnum):
    TAKEN = "taken"
    DUPLICATE = "duplicate"
    LIMIT = "limit"
    SOLD_OUT = "sold_out"
    MISSING = "missing"


class SoldOut(Conflict):
    pass


class LimitReached(Conflict):
    pass


@dataclass(frozen=True, slots=True)
class SaleSpec:
    item_id: int
    price_points: int
    stock: int
    limit_per_member: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Gated:
    """What one `take_as_member` call answered: the verdict (None: not decided there — the session is
    not one of the sale's merchant, or the gate is not built) and the session record it read (None: no
    live member session for the token)."""

    verdict: Verdict | None
    record: bytes | None
    member_id: int = 0  # whose reservation a verdict is about


@dataclass(frozen=True, slots=True)
class Bought:
    order: MallOrder
    sale: FlashSale
    replayed: bool


# Admin ---------------------------------------------------------------------------------------------


def _check_spec(spec: SaleSpec, now: datetime) -> None:
    if not 0 < spec.price_points <= MAX_POINTS:
        raise ValidationError(f"积分价须在 1 到 {MAX_POINTS} 之间", field="price_points")
    if not 0 < spec.stock <= MAX_UNITS:
        raise ValidationError(f"秒杀库存须在 1 到 {MAX_UNITS} 之间", field="stock")
    if not 0 < spec.limit_per_member <= spec.stock:
        raise ValidationError("每人限购须至少 1 件且不超过秒杀库存", field="limit_per_member")
    catalogue.check_campaign_window(spec.starts_at, spec.ends_at, now)


async def create_sale(merchant_id: int, spec: SaleSpec, *, now: datetime, actor: str) -> FlashSale:
    """Create the sale and move `spec.stock` units from the item to it (one `flash_allot` movement)."""
    _check_spec(spec, now)
    async with in_transaction():
        item = await MallItem.select_for_update().get_or_none(id=spec.item_id, merchant_id=merchant_id)
        if item is None:
            raise NotFound("商品不存在", field="item_id")
        if not item.active:
            raise Conflict("商品已下架", field="item_id")
        if item.stock < spec.stock:
            raise Conflict(f"商品库存不足：现有 {item.stock} 件", field="stock")
        sale = await FlashSale.create(
            merchant_id=merchant_id,
            item_id=item.id,
            price_points=spec.price_points,
            stock=spec.stock,
            limit_per_member=spec.limit_per_member,
            starts_at=spec.starts_at,
            ends_at=spec.ends_at,
        )
        await catalogue.move_stock(
            item, -spec.stock, "flash_allot", key=f"flash_allot:{sale.id}", actor=actor
        )
        await audit_log.record(
            merchant_id,
            actor,
            "flash_sale.create",
            f"flash_sale:{sale.id}",
            item_id=item.id,
            stock=spec.stock,
            price_points=spec.price_points,
        )
    return sale


async def list_sales(merchant_id: int, *, since: datetime | None = None) -> list[FlashSale]:
    """The merchant's sales, soonest first (only those not ended by `since`, if given)."""
    query = FlashSale.filter(merchant_id=merchant_id)
    if since is not None:
        query = query.filter(ends_at__gt=since)
    return await query.order_by("starts_at", "id").prefetch_related("item")


def check_window(sale: FlashSale, now: datetime) -> None:
    if now < sale.starts_at:
        raise Conflict("秒杀尚未开始", field="flash_sale")
    if now >= sale.ends_at:
        raise Conflict("秒杀已结束", field="flash_sale")


# The Redis gate -------------------------------------------------------------------------------------


def gate_keys(sale_id: int) -> list[str]:
    tag = f"flash:{{{sale_id}}}"  # one hash slot per sale
    return [f"{tag}:left", f"{tag}:members", f"{tag}:keys"]


async def run_gate(redis: Redis, keys: list[str], *args: str | int) -> str:
    """EVALSHA the gate script; on NOSCRIPT (a fresh or flushed Redis) load it and retry once."""
    argv = [*keys, *(str(arg) for arg in args)]
    try:
        result = await redis.evalsha(GATE_SHA, len(keys), *argv)  # type: ignore[misc]  # redis-py's union
    except NoScriptError:
        await redis.script_load(GATE_SOURCE)
        result = await redis.evalsha(GATE_SHA, len(keys), *argv)  # type: ignore[misc]
    return result.decode() if isinstance(result, bytes) else str(result)


async def take_as_member(redis: Redis, sale: FlashSale, session_key: str, key: str) -> Gated:
    """The gate's take for the member whose session record is at `session_key`, reading that record and
    the configuration version (`config_cache.observe`) in the same call: a losing attempt (sold out)
    costs this one round trip. The reservation is `order_key(sale.id, member, key)`."""
    keys = [*gate_keys(sale.id), session_key, config_cache.KEY]
    args = ["take_as", str(sale.merchant_id), str(sale.limit_per_member), str(sale.id), key]
    try:
        answer = await redis.evalsha(GATE_SHA, len(keys), *keys, *args)  # type: ignore[misc]
    except NoScriptError:
        await redis.script_load(GATE_SOURCE)
        answer = await redis.evalsha(GATE_SHA, len(keys), *keys, *args)  # type: ignore[misc]
    outcome, version, *found = answer
    config_cache.observe(version)
    outcome = outcome.decode()
    if outcome == "no_session":
        return Gated(None, None)
    if outcome in ("foreign", Verdict.MISSING):
        return Gated(None, found[0])
    return Gated(Verdict(outcome), found[0], int(found[1]))


async def undo_take(redis: Redis, sale_id: int, member_id: int, key: str) -> None:
    """Give back a unit the gate just took for an attempt that is refused after all."""
    await _give_back(redis, sale_id, member_id, order_key(sale_id, member_id, key), taken=True)


async def take(redis: Redis, sale: FlashSale, member_id: int, reservation: str, now: datetime) -> Verdict:
    keys = gate_keys(sale.id)
    for _ in range(3):
        verdict = Verdict(await run_gate(redis, keys, "take", member_id, sale.limit_per_member, reservation))
        if verdict is not Verdict.MISSING:
            return verdict
        await rebuild(redis, sale, now)
    raise DomainError("秒杀繁忙，请稍后再试", code=ErrorCode.UNAVAILABLE)


async def release(redis: Redis, sale_id: int, member_id: int, reservation: str, *, give_back: bool) -> str:
    """Undo one reservation (exactly once per key); `give_back` returns its unit to the pool."""
    return await run_gate(redis, gate_keys(sale_id), "release", member_id, reservation, int(give_back))


async def forget_returned(redis: Redis, order: MallOrder) -> None:
    """After a flash order was returned (cancelled), free the member's place under the per-member limit.
    The unit itself went back to the item's stock, not to the sale. Without this the gate keeps counting
    the order until its counters are next rebuilt from PostgreSQL (which counts only orders not returned).
    """
    if order.flash_sale_id is not None:
        await release(redis, order.flash_sale_id, order.member_id, order.idempotency_key, give_back=False)


async def db_state(sale_id: int) -> tuple[int, dict[int, int], dict[str, int]]:
    """From the database: (units left, units per member, order key -> member), the last two for orders
    not returned: the gate holds a reservation exactly while it counts it under the member's limit."""
    sale = await FlashSale.get(id=sale_id)
    rows = await MallOrder.filter(flash_sale_id=sale_id).values_list(
        "member_id", "qty", "status", "idempotency_key"
    )
    per_member: dict[int, int] = {}
    reservations: dict[str, int] = {}
    ordered = 0
    for member_id, qty, status, key in rows:
        ordered += qty
        if status not in RETURNED:
            reservations[key] = member_id
            per_member[member_id] = per_member.get(member_id, 0) + qty
    return sale.stock - ordered, per_member, reservations


async def rebuild(redis: Redis, sale: FlashSale, now: datetime) -> bool:
    """Load the sale's keys from the database unless present. False: another request is rebuilding."""
    keys = gate_keys(sale.id)
    lock = f"flash:{{{sale.id}}}:rebuild"
    token = secrets.token_hex(8)
    if not await redis.set(lock, token, nx=True, px=REBUILD_LOCK_MS):
        for _ in range(REBUILD_WAIT_POLLS):  # another request is rebuilding: wait for its keys
            if await redis.exists(keys[0]):
                break
            await asyncio.sleep(0.02)
        return False
    try:
        left, per_member, reservations = await db_state(sale.id)
        ttl = max(int((sale.ends_at + KEY_TTL_AFTER_END - now).total_seconds()), 60)
        args: list[str | int] = ["load", max(left, 0), ttl, len(per_member)]
        for member_id, count in per_member.items():
            args += [member_id, count]
        for key, member_id in reservations.items():
            args += [key, member_id]
        await run_gate(redis, keys, *args)
    finally:
        if await redis.get(lock) == token.encode():
            await redis.delete(lock)
    return True


# Buying ---------------------------------------------------------------------------------------------


def order_key(sale_id: int, member_id: int, key: str) -> str:
    return f"flash:{sale_id}:{member_id}:{key}"


async def get_sale(merchant_id: int, sale_id: int) -> FlashSale:
    """The sale's terms (item, price, units, limit, window never change once created: a request that
    observed a configuration version reads them from this process's cache; `sold` is not read)."""

    async def load() -> FlashSale | None:
        return await queries.first(FlashSale, id=sale_id, merchant_id=merchant_id)

    sale = await config_cache.cached(("flash_sale", merchant_id, sale_id), load)
    if sale is None:
        raise NotFound("秒杀活动不存在", field="flash_sale")
    config_cache.fix(("flash_sale", sale_id), sale)
    return sale


def open_sale(sale_id: int, now: datetime) -> FlashSale | None:
    """The terms of a sale this process has read (`get_sale`), if it is open at `now`: what an attempt
    needs before its one round trip (`take_as_member`), which also checks the sale's merchant."""
    sale: FlashSale | None = config_cache.fixed(("flash_sale", sale_id))
    if sale is None or not sale.starts_at <= now < sale.ends_at:
        return None
    return sale


async def _buyer(merchant: Merchant, member_id: int) -> Member:
    """The member an order is written for (read only then: a losing attempt needs the gate alone)."""
    member = await queries.first(Member, id=member_id, merchant_id=merchant.id)
    if member is None or member.anonymized_at is not None:
        raise Unauthorized("会员不存在，请重新登录")
    return member


async def buy(
    redis: Redis,
    merchant: Merchant,
    member_id: int,
    sale_id: int,
    *,
    key: str,
    now: datetime,
    effects: Effects,
    gated: tuple[FlashSale, Verdict] | None = None,
) -> Bought:
    """One unit for the member: gated in Redis, then written to the database. A repeated key replays.
    Sold out is answered by the gate alone: the member's row is read only to write an order. `gated`:
    the open sale and the verdict `take_as_member` already gave this attempt."""
    if gated is None:
        sale = await get_sale(merchant.id, sale_id)
        check_window(sale, now)
        verdict = await take(redis, sale, member_id, order_key(sale.id, member_id, key), now)
    else:
        sale, verdict = gated
    reservation = order_key(sale.id, member_id, key)
    if verdict is Verdict.LIMIT:
        existing = await MallOrder.get_or_none(merchant_id=merchant.id, idempotency_key=reservation)
        if existing is not None:  # a retry of an order since returned: replay it
            return Bought(existing, sale, replayed=True)
        if await _forget_returned_orders(redis, sale.id, member_id):
            verdict = await take(redis, sale, member_id, reservation, now)
    if verdict is Verdict.DUPLICATE:
        existing = await MallOrder.get_or_none(merchant_id=merchant.id, idempotency_key=reservation)
        if existing is not None:
            return Bought(existing, sale, replayed=True)
        # The key holds a unit but its order is not written (yet): write it under that reservation.
    elif verdict is Verdict.SOLD_OUT:
        raise SoldOut("已抢光", field="flash_sale")
    elif verdict is Verdict.LIMIT:
        raise LimitReached(f"每人限购 {sale.limit_per_member} 件", field="flash_sale")
    taken = verdict is Verdict.TAKEN
    try:
        member = await _buyer(merchant, member_id)
        order, replayed = await _write(merchant, member, sale, reservation, now)
    except SoldOut:  # Redis had a unit the database does not: drop it
        await asyncio.shield(release(redis, sale.id, member_id, reservation, give_back=False))
        raise
    except BaseException:
        await asyncio.shield(_give_back(redis, sale.id, member_id, reservation, taken=taken))
        raise
    if replayed and taken and order.status in RETURNED:
        # A retry of an order that was returned since (its reservation was freed): the unit just taken
        # is not needed, and the returned order must not count under the limit again. (A live order was
        # written under this very unit by a concurrent duplicate of this request: it keeps it.)
        await asyncio.shield(_give_back(redis, sale.id, member_id, reservation, taken=True))
    if not replayed:
        item = await MallItem.get(id=sale.item_id)
        await tell(
            effects,
            "flash_confirmed",
            merchant_id=merchant.id,
            member_id=member_id,
            event_key=f"order:{order.id}",
            context={
                "item": item.name,
                "qty": order.qty,
                "code": order.open_pickup_code or "",
                "deadline": local_time(order.pickup_deadline, merchant.timezone)
                if order.pickup_deadline
                else "",
            },
        )
    return Bought(order, sale, replayed)


async def _give_back(redis: Redis, sale_id: int, member_id: int, reservation: str, *, taken: bool) -> None:
    """Undo a reservation with its unit. A unit this request `taken` goes back even if the reservation was
    freed meanwhile (a retry of a returned order racing the member's next attempt, which frees the
    returned orders' places without their units)."""
    outcome = await release(redis, sale_id, member_id, reservation, give_back=True)
    if outcome == "absent" and taken:
        await run_gate(redis, gate_keys(sale_id), "restock")


async def _forget_returned_orders(redis: Redis, sale_id: int, member_id: int) -> bool:
    """Free the member's place under the limit for their orders of this sale that were returned without
    the gate hearing of it (a pick-up the expiry job returned, say); True if any place was freed. Only
    run when the gate says "limit", so the common path pays nothing for it."""
    returned = await MallOrder.filter(
        flash_sale_id=sale_id, member_id=member_id, status__in=RETURNED
    ).values_list("idempotency_key", flat=True)
    freed = False
    for reservation in returned:
        outcome = await release(redis, sale_id, member_id, str(reservation), give_back=False)
        freed = freed or outcome == "released"
    return freed


async def live_units(sale_id: int, member_id: int) -> int:
    rows = (
        await MallOrder.filter(flash_sale_id=sale_id, member_id=member_id)
        .exclude(status__in=RETURNED)
        .values_list("qty", flat=True)
    )
    return sum(int(qty) for qty in rows)  # type: ignore[call-overload]


async def _write(
    merchant: Merchant, member: Member, sale: FlashSale, reservation: str, now: datetime
) -> tuple[MallOrder, bool]:
    """The order, under the member's account lock (their attempts serialize, so the limit check is
    exact); the sale row is locked last, by the conditional `sold + 1`, only for the commit."""
    async with in_transaction():
        await ledger.lock_account(merchant.id, member.id)
        existing = await MallOrder.get_or_none(merchant_id=merchant.id, idempotency_key=reservation)
        if existing is not None:
            return existing, True
        if await live_units(sale.id, member.id) >= sale.limit_per_member:
            raise LimitReached(f"每人限购 {sale.limit_per_member} 件", field="flash_sale")
        item = await MallItem.get(id=sale.item_id)
        order = await catalogue.place_order(
            merchant,
            member,
            item,
            qty=1,
            points=sale.price_points,
            key=reservation,
            now=now,
            flash_sale_id=sale.id,
            take_stock=False,
        )
        counted = await FlashSale.filter(id=sale.id, sold__lt=F("stock")).update(sold=F("sold") + 1)
        if not counted:
            raise SoldOut("已抢光", field="flash_sale")  # rolls the order and its debit back
    return order, False
