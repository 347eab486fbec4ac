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
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
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
    NOT_STARTED = "not_started"
    ENDED = "ended"
    LIMIT = "limit"
    SOLD_OUT = "sold_out"
    MISSING = "missing"


class SoldOut(Conflict):
    pass


class LimitReached(Conflict):
    pass


class Closed(Conflict):
    """The sale is not open (an edit moved its window, or it was ended early)."""


@dataclass(frozen=True, slots=True)
class SaleSpec:
    item_id: int
    price_points: int
    stock: int
    limit_per_member: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class SaleChanges:
    """An admin's edit of a sale: the fields given (None: unchanged)."""

    price_points: int | None = None
    stock: int | None = None
    limit_per_member: int | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Gated:
    """What one `take_as_member` call answered: the verdict (None: not decided there — the session is
    not one of the sale's merchant, or the gate is not built), the session record it read (None: no
    live member session for the token) and, with a verdict, the sale's terms current at the
    configuration version that call observed."""

    verdict: Verdict | None
    record: bytes | None
    member_id: int = 0  # whose reservation a verdict is about
    sale: FlashSale | None = None


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


RUNNING_FIXED = {"price_points": "积分价", "limit_per_member": "每人限购", "starts_at": "开始时间"}


async def _locked(merchant_id: int, sale_id: int) -> tuple[FlashSale, MallItem]:
    """The sale and its item, locked in the order buyers lock them (item, then sale)."""
    found = await FlashSale.get_or_none(id=sale_id, merchant_id=merchant_id)
    if found is None:
        raise NotFound("秒杀活动不存在", field="flash_sale")
    item = await MallItem.select_for_update().get(id=found.item_id)
    return await FlashSale.select_for_update().get(id=sale_id), item


def _edited(sale: FlashSale, changes: SaleChanges) -> SaleSpec:
    def pick(name: str) -> Any:
        value = getattr(changes, name)
        return getattr(sale, name) if value is None else value

    return SaleSpec(
        item_id=sale.item_id,
        price_points=pick("price_points"),
        stock=pick("stock"),
        limit_per_member=pick("limit_per_member"),
        starts_at=pick("starts_at"),
        ends_at=pick("ends_at"),
    )


def _check_edit(sale: FlashSale, spec: SaleSpec, now: datetime) -> None:
    """Before the start everything may change; once started only the end (still in the future) and the
    stock (upwards: the gate adds the units at once); an ended sale nothing."""
    if now >= sale.ends_at:
        raise Conflict("秒杀已结束，不能再修改", field="flash_sale")
    if spec.stock < sale.sold:
        raise Conflict(f"秒杀库存不能少于已售出的 {sale.sold} 件", field="stock")
    if now < sale.starts_at:
        _check_spec(spec, now)
        return
    for name, label in RUNNING_FIXED.items():
        if getattr(spec, name) != getattr(sale, name):
            raise Conflict(f"秒杀已开始，{label}不能再修改", field=name)
    if spec.stock < sale.stock:
        raise Conflict("秒杀已开始，库存只能增加", field="stock")
    if spec.stock > MAX_UNITS:
        raise ValidationError(f"秒杀库存须在 1 到 {MAX_UNITS} 之间", field="stock")
    if spec.ends_at.utcoffset() is None:
        raise ValidationError("时间须带时区", field="ends_at")
    if spec.ends_at <= now:
        raise ValidationError("结束时间须晚于现在；要马上结束请用“立即结束”", field="ends_at")


async def update_sale(
    redis: Redis, merchant_id: int, sale_id: int, changes: SaleChanges, *, now: datetime, actor: str
) -> FlashSale:
    """Edit a sale (`_check_edit` says what may change when). The units a stock change needs move
    between the item and the sale; the gate's terms change before the transaction commits, under the
    sale's row lock, so no attempt in any process is decided on the old terms once this returns."""
    async with in_transaction():
        sale, item = await _locked(merchant_id, sale_id)
        spec = _edited(sale, changes)
        _check_edit(sale, spec, now)
        before = {name: getattr(sale, name) for name in _SPEC_FIELDS}
        diff = {name: [_plain(before[name]), _plain(getattr(spec, name))] for name in _SPEC_FIELDS}
        diff = {name: pair for name, pair in diff.items() if pair[0] != pair[1]}
        if not diff:
            return sale
        if spec.stock != sale.stock:
            if item.stock < spec.stock - sale.stock:
                raise Conflict(f"商品库存不足：现有 {item.stock} 件", field="stock")
            key = f"flash_allot:{sale.id}:{sale.stock}-{spec.stock}:{secrets.token_hex(4)}"
            await catalogue.move_stock(item, sale.stock - spec.stock, "flash_allot", key=key, actor=actor)
        for name in _SPEC_FIELDS:
            setattr(sale, name, getattr(spec, name))
        await sale.save(update_fields=list(_SPEC_FIELDS))
        await audit_log.record(merchant_id, actor, "flash_sale.update", f"flash_sale:{sale.id}", **diff)
        await publish_terms(redis, sale, now)
    config_cache.forget()
    return sale


async def end_sale(redis: Redis, merchant_id: int, sale_id: int, *, now: datetime, actor: str) -> FlashSale:
    """End a sale now (one not started yet never opens). Attempts from here on are refused by the gate in
    every process; an order the gate let through just before cannot be counted once this commits (the
    `sold + 1` checks the end against the database clock under the sale's row lock)."""
    async with in_transaction():
        sale, _ = await _locked(merchant_id, sale_id)
        if now >= sale.ends_at:
            raise Conflict("秒杀已结束", field="flash_sale")
        before = sale.ends_at
        # The end is the moment the row is held (the clock `_COUNT_SQL` compares with): every order
        # counted before is earlier, none after can be counted.
        ends = max((await queries.fetch_one("SELECT clock_timestamp() AS now"))["now"], now)
        sale.starts_at, sale.ends_at = min(sale.starts_at, ends), ends
        await sale.save(update_fields=["starts_at", "ends_at"])
        await audit_log.record(
            merchant_id,
            actor,
            "flash_sale.end",
            f"flash_sale:{sale.id}",
            ends_at=[before.isoformat(), ends.isoformat()],
            sold=sale.sold,
            stock=sale.stock,
        )
        await publish_terms(redis, sale, now)
    config_cache.forget()
    return sale


_SPEC_FIELDS = ("price_points", "stock", "limit_per_member", "starts_at", "ends_at")


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def check_window(sale: FlashSale, now: datetime) -> None:
    if now < sale.starts_at:
        raise Conflict("秒杀尚未开始", field="flash_sale")
    if now >= sale.ends_at:
        raise Conflict("秒杀已结束", field="flash_sale")


# The Redis gate -------------------------------------------------------------------------------------


def gate_keys(sale_id: int) -> list[str]:
    tag = f"flash:{{{sale_id}}}"  # one hash slot per sale
    return [f"{tag}:left", f"{tag}:members", f"{tag}:keys", f"{tag}:terms"]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _terms(sale: FlashSale) -> str:
    return f"{_ms(sale.starts_at)} {_ms(sale.ends_at)} {sale.stock}"


def _ttl(sale: FlashSale, now: datetime) -> int:
    """Seconds the gate's keys live: until a day after the end (no date arithmetic past year 9999)."""
    return max(int((sale.ends_at - now).total_seconds() + KEY_TTL_AFTER_END.total_seconds()), 60)


async def publish_terms(redis: Redis, sale: FlashSale, now: datetime) -> None:
    """Tell the gate a sale's window and stock (units left move by the stock's change)."""
    args = (_ms(sale.starts_at), _ms(sale.ends_at), sale.stock, _ttl(sale, now))
    await run_gate(redis, gate_keys(sale.id), "terms", *args)


async def run_gate(redis: Redis, keys: list[str], *args: str | int) -> str:
    """EVALSHA the gate script; on NOSCRIPT (a fresh or flushed Redis) load it and retry once."""
    argv = [*keys, *(str(arg) for arg in args)]
    try:
        result = await redis.evalsha(GATE_SHA, len(keys), *argv)  # type: ignore[misc]  # redis-py's union
    except NoScriptError:
        await redis.script_load(GATE_SOURCE)
        result = await redis.evalsha(GATE_SHA, len(keys), *argv)  # type: ignore[misc]
    return result.decode() if isinstance(result, bytes) else str(result)


async def take_as_member(redis: Redis, sale: FlashSale, session_key: str, key: str, now: datetime) -> Gated:
    """The gate's take for the member whose session record is at `session_key`, reading that record and
    the configuration version (`config_cache.observe`) in the same call: a losing attempt (sold out)
    costs this one round trip. The reservation is `order_key(sale.id, member, key)`. The gate itself
    holds the sale's window and stock; `sale` (this process's copy of the terms) is reloaded when
    the version moved since it was read, so an order is never written at terms an admin has changed."""
    keys = [*gate_keys(sale.id), session_key, config_cache.KEY]
    args = ["take_as", str(sale.merchant_id), str(sale.limit_per_member), str(sale.id), key, str(_ms(now))]
    try:
        answer = await redis.evalsha(GATE_SHA, len(keys), *keys, *args)  # type: ignore[misc]
    except NoScriptError:
        await redis.script_load(GATE_SOURCE)
        answer = await redis.evalsha(GATE_SHA, len(keys), *keys, *args)  # type: ignore[misc]
    outcome, version, *found = answer
    observed = config_cache.observe(version)
    outcome = outcome.decode()
    if outcome == "no_session":
        return Gated(None, None)
    if outcome in ("foreign", Verdict.MISSING):
        return Gated(None, found[0])
    held = config_cache.fixed(("flash_sale", sale.id))
    if held is None or held[0] != observed:
        sale = await get_sale(sale.merchant_id, sale.id)
    return Gated(Verdict(outcome), found[0], int(found[1]), sale)


async def undo_take(redis: Redis, sale_id: int, member_id: int, key: str) -> None:
    """Give back a unit the gate just took for an attempt that is refused after all."""
    await _give_back(redis, sale_id, member_id, order_key(sale_id, member_id, key), taken=True)


async def take(redis: Redis, sale: FlashSale, member_id: int, reservation: str, now: datetime) -> Verdict:
    keys = gate_keys(sale.id)
    args = ("take", member_id, sale.limit_per_member, reservation, _ms(now))
    for _ in range(3):
        verdict = Verdict(await run_gate(redis, keys, *args))
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


async def db_state(sale_id: int) -> tuple[FlashSale, int, dict[int, int], dict[str, int]]:
    """From the database: (the sale, units left, units per member, order key -> member), the last two
    for orders not returned: the gate holds a reservation exactly while it counts it under the member's
    limit."""
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
    return sale, sale.stock - ordered, per_member, reservations


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
        current, left, per_member, reservations = await db_state(sale.id)  # `left` is of these terms
        args: list[str | int] = ["load", left, _ttl(current, now), _terms(current), len(per_member)]
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
    """The sale's terms, read from this process's cache by a request that observed a configuration
    version (an admin's edit moves it); `sold` is not read. Kept (`config_cache.fix`) with that
    version for `open_sale`, the attempt's way in before it has observed one."""

    async def load() -> FlashSale | None:
        return await queries.first(FlashSale, id=sale_id, merchant_id=merchant_id)

    sale = await config_cache.cached(("flash_sale", merchant_id, sale_id), load)
    if sale is None:
        raise NotFound("秒杀活动不存在", field="flash_sale")
    config_cache.fix(("flash_sale", sale_id), (config_cache.observed(), sale))
    return sale


def open_sale(sale_id: int, now: datetime) -> FlashSale | None:
    """The terms of a sale this process has read (`get_sale`), if it is open at `now`: what an attempt
    needs before its one round trip (`take_as_member`), which also checks the sale's merchant and
    window (the gate's copy of the window is the one that counts: an edit writes it at once)."""
    held: tuple[int | None, FlashSale] | None = config_cache.fixed(("flash_sale", sale_id))
    if held is None or not held[1].starts_at <= now < held[1].ends_at:
        return None
    return held[1]


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
    elif verdict is Verdict.NOT_STARTED:
        raise Closed("秒杀尚未开始", field="flash_sale")
    elif verdict is Verdict.ENDED:
        raise Closed("秒杀已结束", field="flash_sale")
    elif verdict is Verdict.LIMIT:
        raise LimitReached(f"每人限购 {sale.limit_per_member} 件", field="flash_sale")
    taken = verdict is Verdict.TAKEN
    try:
        member = await _buyer(merchant, member_id)
        order, replayed = await _write(merchant, member, sale, reservation, now)
    except (SoldOut, Closed):  # Redis had a unit the database does not count: drop it
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
        if not await queries.fetch_rows(_COUNT_SQL, sale=sale.id):  # rolls the order and its debit back
            current = await FlashSale.get(id=sale.id)
            if current.sold < current.stock:
                raise Closed("秒杀尚未开始" if now < current.starts_at else "秒杀已结束", field="flash_sale")
            raise SoldOut("已抢光", field="flash_sale")
    return order, False


# The unit is counted only inside the sale's window by the database's clock at the moment the row is
# written (re-checked after waiting for an admin's edit holding the row): once "end now" commits, no
# order taken before it can still be counted.
_COUNT_SQL = """
UPDATE flash_sale SET sold = sold + 1
 WHERE id = :sale AND sold < stock AND starts_at <= clock_timestamp() AND ends_at > clock_timestamp()
RETURNING sold
"""
