"""Count cards (计次卡: N uses of a service) and time cards (unlimited use between two dates).

A card is sold at the till or granted by a manager (unique `issue_key`, so a retried sale issues
one card). It is valid from the moment of issue until the end of the merchant-local day
`valid_days` after it. A use locks the card row, refuses a revoked, not-yet-valid, expired or
(count card) exhausted card with its own error code, decrements `uses_left` and writes one
append-only `CardUse` (unique key: a retried use replays). Concurrent uses of one card serialize
on the row lock, so a card with 3 uses left serves exactly 3 of any number of simultaneous scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import DomainError, ErrorCode, IdempotencyMismatch, NotFound, ValidationError
from handlers.wallet.ledger import check_key
from models.cards import CardKind, CardProduct, CardUse, MemberCard
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff

MAX_USES = 1000
MAX_VALID_DAYS = 3650
MAX_PRICE_FEN = 100_000_000
LAST_USES = 3
Source = Literal["sold", "granted"]
Status = Literal["active", "exhausted", "expired", "not_started", "revoked"]


@dataclass(frozen=True, slots=True)
class ProductInput:
    kind: CardKind
    name: str
    service: str
    uses: int | None
    valid_days: int
    price_fen: int = 0
    active: bool = True


@dataclass(frozen=True, slots=True)
class Issued:
    card: MemberCard
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Used:
    card: MemberCard
    use: CardUse
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CardView:
    card: MemberCard
    product: CardProduct
    status: Status
    last_uses: list[CardUse]


def _text(value: str, field: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 64:
        raise ValidationError(f"{field}: 1–64 个字", field=field)
    return value


def check_product(data: ProductInput) -> ProductInput:
    if data.kind == CardKind.COUNT and (data.uses is None or not 1 <= data.uses <= MAX_USES):
        raise ValidationError(f"uses: 计次卡需要 1–{MAX_USES} 次", field="uses")
    if data.kind == CardKind.TIME and data.uses is not None:
        raise ValidationError("uses: 时间卡不限次数，不能设置次数", field="uses")
    if not 1 <= data.valid_days <= MAX_VALID_DAYS:
        raise ValidationError(f"valid_days: 1–{MAX_VALID_DAYS} 天", field="valid_days")
    if not 0 <= data.price_fen <= MAX_PRICE_FEN:
        raise ValidationError(f"price_fen 须在 0 到 {MAX_PRICE_FEN} 之间", field="price_fen")
    return ProductInput(
        data.kind,
        _text(data.name, "name"),
        _text(data.service, "service"),
        data.uses,
        data.valid_days,
        data.price_fen,
        data.active,
    )


async def create_product(merchant: Merchant, data: ProductInput, *, actor: str) -> CardProduct:
    data = check_product(data)
    async with in_transaction():
        product = await CardProduct.create(
            merchant_id=merchant.id,
            kind=data.kind,
            name=data.name,
            service=data.service,
            uses=data.uses,
            valid_days=data.valid_days,
            price_fen=data.price_fen,
            active=data.active,
        )
        await audit_log.record(
            merchant.id,
            actor,
            "service_card_product.create",
            f"product:{product.id}",
            name=data.name,
            kind=data.kind.value,
        )
    return product


async def product(merchant: Merchant, product_id: int) -> CardProduct:
    found = await CardProduct.get_or_none(id=product_id, merchant_id=merchant.id)
    if found is None:
        raise NotFound("没有这个服务卡产品", field="product_id")
    return found


async def update_product(
    merchant: Merchant, product_id: int, data: ProductInput, *, actor: str
) -> CardProduct:
    """Replace a product's terms; cards already issued keep theirs. The kind cannot change."""
    data = check_product(data)
    async with in_transaction():
        found = await CardProduct.select_for_update().get_or_none(id=product_id, merchant_id=merchant.id)
        if found is None:
            raise NotFound("没有这个服务卡产品", field="product_id")
        if found.kind != data.kind:
            raise ValidationError("kind: 产品类型不能修改，请新建产品", field="kind")
        found.name, found.service, found.uses = data.name, data.service, data.uses
        found.valid_days, found.price_fen, found.active = data.valid_days, data.price_fen, data.active
        await found.save()
        await audit_log.record(
            merchant.id,
            actor,
            "service_card_product.update",
            f"product:{found.id}",
            name=data.name,
            active=data.active,
        )
    return found


async def products(merchant: Merchant, *, active_only: bool = False) -> list[CardProduct]:
    query = CardProduct.filter(merchant_id=merchant.id)
    return await (query.filter(active=True) if active_only else query).order_by("id")


def valid_until(now: datetime, valid_days: int, timezone: str) -> datetime:
    """The end (23:59:59.999999) of the merchant-local day `valid_days` days after `now`."""
    zone = ZoneInfo(timezone)
    day = (now.astimezone(zone) + timedelta(days=valid_days)).date()
    return datetime.combine(day, time.max, tzinfo=zone)


def local_date(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).date().isoformat()


async def issue(
    merchant: Merchant,
    member: Member,
    product_id: int,
    *,
    source: Source,
    key: str,
    now: datetime,
    actor: str,
    reason: str = "",
) -> Issued:
    """Sell (`sold`, the product's price recorded) or grant (`granted`, free, audit row) one card.

    Idempotent by `key` (per source); the same key for another member or product is a 409."""
    check_key(key)
    issue_key = f"{source}:{key}"
    found = await product(merchant, product_id)
    existing = await MemberCard.get_or_none(merchant_id=merchant.id, issue_key=issue_key)
    if existing is not None:
        return _replay_issue(existing, member, product_id)
    if not found.active:
        raise ValidationError("该服务卡产品已下架", field="product_id")
    try:
        async with in_transaction():
            card = await MemberCard.create(
                merchant_id=merchant.id,
                member_id=member.id,
                product_id=found.id,
                kind=found.kind,
                uses_total=found.uses,
                uses_left=found.uses,
                valid_from=now,
                valid_until=valid_until(now, found.valid_days, merchant.timezone),
                source=source,
                issue_key=issue_key,
                price_fen=found.price_fen if source == "sold" else 0,
            )
            await audit_log.record(
                merchant.id,
                actor,
                f"service_card.{source}",
                f"card:{card.id}",
                member_id=member.id,
                product_id=found.id,
                reason=reason,
            )
    except IntegrityError:  # a concurrent request with this key won
        return _replay_issue(
            await MemberCard.get(merchant_id=merchant.id, issue_key=issue_key), member, product_id
        )
    return Issued(card)


def _replay_issue(card: MemberCard, member: Member, product_id: int) -> Issued:
    if card.member_id != member.id or card.product_id != product_id:
        raise IdempotencyMismatch()
    return Issued(card, replayed=True)


def status(card: MemberCard, now: datetime) -> Status:
    if card.revoked_at is not None:
        return "revoked"
    if now < card.valid_from:
        return "not_started"
    if now > card.valid_until:
        return "expired"
    if card.kind == CardKind.COUNT and (card.uses_left or 0) <= 0:
        return "exhausted"
    return "active"


def refusal(card: MemberCard, now: datetime, timezone: str) -> DomainError | None:
    """Why this card cannot be used now (each reason its own code), or None."""
    match status(card, now):
        case "revoked":
            return DomainError("服务卡已停用", code=ErrorCode.SERVICE_CARD_REVOKED, field="card")
        case "not_started":
            return DomainError(
                f"服务卡尚未生效，{local_date(card.valid_from, timezone)} 起可用",
                code=ErrorCode.SERVICE_CARD_NOT_STARTED,
                field="card",
            )
        case "expired":
            return DomainError(
                f"服务卡已过期 {local_date(card.valid_until, timezone)}",
                code=ErrorCode.SERVICE_CARD_EXPIRED,
                field="card",
            )
        case "exhausted":
            return DomainError("服务卡次数已用完", code=ErrorCode.SERVICE_CARD_EXHAUSTED, field="card")
    return None


async def use(merchant: Merchant, card_id: int, *, key: str, staff: Staff | None, now: datetime) -> Used:
    """Consume one use of a card (a count card's `uses_left` drops by one). Idempotent by `key`."""
    check_key(key)
    async with in_transaction():
        card = await MemberCard.select_for_update().get_or_none(id=card_id, merchant_id=merchant.id)
        if card is None:
            raise NotFound("没有这张服务卡", field="card")
        done = await CardUse.get_or_none(merchant_id=merchant.id, idempotency_key=key)
        if done is not None:
            if done.card_id != card.id:
                raise IdempotencyMismatch()
            return Used(card, done, replayed=True)
        refused = refusal(card, now, merchant.timezone)
        if refused is not None:
            raise refused
        if card.kind == CardKind.COUNT:
            card.uses_left = (card.uses_left or 0) - 1
            await card.save(update_fields=["uses_left"])
        try:
            async with in_transaction():  # a savepoint: the same key on another card may commit first
                record = await CardUse.create(
                    merchant_id=merchant.id,
                    card_id=card.id,
                    uses_left_after=card.uses_left,
                    idempotency_key=key,
                    staff_id=staff.id if staff else None,
                    store_id=staff.store_id if staff else None,
                    created_at=now,
                )
        except IntegrityError:
            raise IdempotencyMismatch() from None
        return Used(card, record)


async def use_for_member(
    merchant: Merchant, member: Member, product_id: int, *, key: str, staff: Staff | None, now: datetime
) -> Used:
    """Use the member's card of `product_id` that expires soonest among the usable ones."""
    check_key(key)
    done = await CardUse.get_or_none(merchant_id=merchant.id, idempotency_key=key)
    if done is not None:
        first = await MemberCard.get(id=done.card_id)
        if (first.member_id, first.product_id) != (member.id, product_id):
            raise IdempotencyMismatch()
        return await use(merchant, first.id, key=key, staff=staff, now=now)
    cards = await MemberCard.filter(
        merchant_id=merchant.id, member_id=member.id, product_id=product_id
    ).order_by("valid_until", "id")
    if not cards:
        raise NotFound("该会员没有这项服务卡", field="product_id")
    usable = [card for card in cards if status(card, now) == "active"]
    for card in usable:
        try:
            return await use(merchant, card.id, key=key, staff=staff, now=now)
        except DomainError as exc:
            if exc.code != ErrorCode.SERVICE_CARD_EXHAUSTED or card is usable[-1]:
                raise
    latest = max(cards, key=lambda card: (card.valid_until, card.id))
    raise refusal(latest, now, merchant.timezone) or NotFound("该会员没有可用的服务卡", field="product_id")


async def revoke(
    merchant: Merchant, card_id: int, *, reason: str, actor: str, now: datetime, member_id: int | None = None
) -> MemberCard:
    """Stop a card (no further uses); revoking a revoked card changes nothing. With `member_id`, a card
    held by another member is not found."""
    async with in_transaction():
        card = await MemberCard.select_for_update().get_or_none(id=card_id, merchant_id=merchant.id)
        if card is None or member_id not in (None, card.member_id):
            raise NotFound("没有这张服务卡", field="card")
        if card.revoked_at is None:
            card.revoked_at = now
            await card.save(update_fields=["revoked_at"])
            await audit_log.record(
                merchant.id,
                actor,
                "service_card.revoke",
                f"card:{card.id}",
                member_id=card.member_id,
                reason=reason,
            )
    return card


async def member_cards(
    merchant_id: int, member_id: int, now: datetime, *, active_only: bool = False
) -> list[CardView]:
    """The member's cards, usable ones first (soonest-expiring first), each with its last uses."""
    mine = MemberCard.filter(merchant_id=merchant_id, member_id=member_id)
    cards = await mine.order_by("valid_until", "id")
    if active_only:
        cards = [card for card in cards if status(card, now) == "active"]
    catalogue = {p.id: p for p in await CardProduct.filter(id__in={c.product_id for c in cards})}
    views = []
    for card in cards:
        last = await CardUse.filter(card_id=card.id).order_by("-id").limit(LAST_USES)
        views.append(CardView(card, catalogue[card.product_id], status(card, now), last))
    return sorted(views, key=lambda view: view.status != "active")
