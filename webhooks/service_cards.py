"""Count and time cards over HTTP: products (admin; managers read), sale and use at the till
(cashier+), grant and revoke (manager+), and the member's own cards (mini-program)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import Field, StrictInt, model_validator

from handlers.members import member_qr
from handlers.wallet import service_cards
from handlers.wallet.service_cards import ProductInput, Status
from models.cards import CardKind, CardProduct, CardUse, MemberCard
from models.merchant import Merchant
from webhooks.api import BigId, Call, In, IntId, Line, Out, Routes
from webhooks.appkeys import RUNTIME
from webhooks.auth import ADMIN, CASHIER, MANAGER, MEMBER
from webhooks.mp import MerchantPath
from webhooks.wallet import Code, Key, Reason, resolve_member

routes = Routes("service_cards")


class CardProductIn(In):
    kind: CardKind
    name: Annotated[Line, Field(min_length=1, max_length=64)]
    service: Annotated[Line, Field(min_length=1, max_length=64, description="what one use is, e.g. 洗剪吹")]
    uses: Annotated[StrictInt, Field(ge=1, le=service_cards.MAX_USES)] | None = Field(
        default=None, description="count cards: the number of uses; time cards: omit"
    )
    valid_days: Annotated[StrictInt, Field(ge=1, le=service_cards.MAX_VALID_DAYS)]
    price_fen: Annotated[StrictInt, Field(ge=0, le=service_cards.MAX_PRICE_FEN)] = 0
    active: bool = True


class CardProductOut(Out):
    id: int
    kind: CardKind
    name: str
    service: str
    uses: int | None
    valid_days: int
    price_fen: int
    active: bool


class CardProductsOut(Out):
    products: list[CardProductOut]


class ProductPath(In):
    product_id: IntId


class CardPath(In):
    card_id: BigId


class CardSellIn(In):
    member_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    member_code: Code | None = None
    product_id: IntId
    idempotency_key: Key

    @model_validator(mode="after")
    def _one_member(self) -> CardSellIn:
        if (self.member_id is None) == (self.member_code is None):
            raise ValueError("member_id 和 member_code 须且只能填写一个")
        return self


class CardGrantIn(In):
    member_code: Code
    product_id: IntId
    reason: Reason
    idempotency_key: Key


class CardRevokeIn(In):
    reason: Reason
    member_id: IntId | None = Field(
        None, description="the member expected to hold the card: another member's card is not found (404)"
    )


class CardUseIn(In):
    idempotency_key: Key


class CardScanUseIn(In):
    qr: Annotated[Line, Field(min_length=1, max_length=64, description="the scanned QR token")] | None = None
    member_code: Code | None = None
    product_id: IntId
    idempotency_key: Key

    @model_validator(mode="after")
    def _one_of(self) -> CardScanUseIn:
        if (self.qr is None) == (self.member_code is None):
            raise ValueError("qr 和 member_code 须且只能填写一个")
        return self


class CardUseOut(Out):
    id: int
    used_at: datetime
    uses_left_after: int | None
    store_id: int | None


class ServiceCardOut(Out):
    id: int
    member_id: int
    product_id: int
    name: str
    service: str
    kind: CardKind
    uses_total: int | None
    uses_left: int | None = Field(description="null for a time card (unlimited)")
    valid_from: datetime
    valid_until: datetime
    valid_until_date: date = Field(description="the last valid day, merchant-local")
    source: str = Field(examples=["sold", "granted"])
    price_fen: int
    status: Status
    last_uses: list[CardUseOut] = Field(default_factory=list)
    replayed: bool = False


class ServiceCardsOut(Out):
    cards: list[ServiceCardOut]


class CardUsedOut(Out):
    card: ServiceCardOut
    use: CardUseOut
    replayed: bool = Field(description="true when the key was used before: no second use was taken")


def _product(found: CardProduct) -> CardProductOut:
    return CardProductOut(
        id=found.id,
        kind=CardKind(found.kind),
        name=found.name,
        service=found.service,
        uses=found.uses,
        valid_days=found.valid_days,
        price_fen=found.price_fen,
        active=found.active,
    )


def _input(body: CardProductIn) -> ProductInput:
    return ProductInput(
        body.kind, body.name, body.service, body.uses, body.valid_days, body.price_fen, body.active
    )


def _use(row: CardUse) -> CardUseOut:
    return CardUseOut(
        id=row.id, used_at=row.created_at, uses_left_after=row.uses_left_after, store_id=row.store_id
    )


async def card_out(
    merchant: Merchant,
    found: MemberCard,
    *,
    replayed: bool = False,
    last: list[CardUse] | None = None,
    product: CardProduct | None = None,
) -> ServiceCardOut:
    product = product or await CardProduct.get(id=found.product_id)
    until = date.fromisoformat(service_cards.local_date(found.valid_until, merchant.timezone))
    return ServiceCardOut(
        id=found.id,
        member_id=found.member_id,
        product_id=found.product_id,
        name=product.name,
        service=product.service,
        kind=CardKind(found.kind),
        uses_total=found.uses_total,
        uses_left=found.uses_left,
        valid_from=found.valid_from,
        valid_until=found.valid_until,
        valid_until_date=until,
        source=found.source,
        price_fen=found.price_fen,
        status=service_cards.status(found, datetime.now(UTC)),
        last_uses=[_use(u) for u in last or []],
        replayed=replayed,
    )


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


@routes.get("/api/admin/service-cards/products", response=CardProductsOut, auth=MANAGER)
async def list_products(call: Call[None, None]) -> CardProductsOut:
    """Every count/time card product of the merchant, inactive ones included."""
    return CardProductsOut(products=[_product(p) for p in await service_cards.products(call.merchant)])


@routes.post(
    "/api/admin/service-cards/products", body=CardProductIn, response=CardProductOut, status=201, auth=ADMIN
)
async def create_product(call: Call[CardProductIn, None]) -> CardProductOut:
    """Create a count card (`uses` ≥ 1) or a time card (no `uses`) product; audited."""
    found = await service_cards.create_product(call.merchant, _input(call.body), actor=_actor(call))
    return _product(found)


@routes.put(
    "/api/admin/service-cards/products/{product_id}",
    path_model=ProductPath,
    body=CardProductIn,
    response=CardProductOut,
    auth=ADMIN,
)
async def update_product(call: Call[CardProductIn, ProductPath]) -> CardProductOut:
    """Replace a product's terms (cards already issued keep theirs); the kind cannot change."""
    found = await service_cards.update_product(
        call.merchant, call.path.product_id, _input(call.body), actor=_actor(call)
    )
    return _product(found)


@routes.delete("/api/admin/service-cards/products/{product_id}", path_model=ProductPath, auth=ADMIN)
async def delete_product(call: Call[None, ProductPath]) -> None:
    """Take a product off sale (it is kept: issued cards refer to it)."""
    found = await service_cards.product(call.merchant, call.path.product_id)
    data = ProductInput(
        CardKind(found.kind),
        found.name,
        found.service,
        found.uses,
        found.valid_days,
        found.price_fen,
        active=False,
    )
    await service_cards.update_product(call.merchant, found.id, data, actor=_actor(call))


@routes.post(
    "/api/staff/service-cards", body=CardSellIn, response=ServiceCardOut, auth=CASHIER, errors=(400, 404, 409)
)
async def sell(call: Call[CardSellIn, None]) -> ServiceCardOut:
    """Sell a card at the till (its price is recorded); a retried key returns the same card."""
    body = call.body
    member = await resolve_member(call.merchant, body.member_id, body.member_code)
    issued = await service_cards.issue(
        call.merchant,
        member,
        body.product_id,
        source="sold",
        key=body.idempotency_key,
        now=datetime.now(UTC),
        actor=_actor(call),
    )
    return await card_out(call.merchant, issued.card, replayed=issued.replayed)


@routes.post(
    "/api/admin/service-cards/grant",
    body=CardGrantIn,
    response=ServiceCardOut,
    auth=MANAGER,
    errors=(400, 404, 409),
)
async def grant(call: Call[CardGrantIn, None]) -> ServiceCardOut:
    """Give a member a card free of charge, with a reason; audited."""
    body = call.body
    member = await resolve_member(call.merchant, None, body.member_code)
    issued = await service_cards.issue(
        call.merchant,
        member,
        body.product_id,
        source="granted",
        key=body.idempotency_key,
        now=datetime.now(UTC),
        actor=_actor(call),
        reason=body.reason,
    )
    return await card_out(call.merchant, issued.card, replayed=issued.replayed)


@routes.post(
    "/api/admin/service-cards/{card_id}/revoke",
    path_model=CardPath,
    body=CardRevokeIn,
    response=ServiceCardOut,
    auth=MANAGER,
)
async def revoke(call: Call[CardRevokeIn, CardPath]) -> ServiceCardOut:
    """Stop a card: no further uses; audited. Revoking twice changes nothing."""
    found = await service_cards.revoke(
        call.merchant,
        call.path.card_id,
        reason=call.body.reason,
        actor=_actor(call),
        now=datetime.now(UTC),
        member_id=call.body.member_id,
    )
    return await card_out(call.merchant, found)


@routes.post(
    "/api/staff/service-cards/{card_id}/use",
    path_model=CardPath,
    body=CardUseIn,
    response=CardUsedOut,
    auth=CASHIER,
    errors=(400, 409),
)
async def use_card(call: Call[CardUseIn, CardPath]) -> CardUsedOut:
    """Take one use of a card (refused when used up, expired, not yet valid or revoked)."""
    used = await service_cards.use(
        call.merchant,
        call.path.card_id,
        key=call.body.idempotency_key,
        staff=call.staff,
        now=datetime.now(UTC),
    )
    return CardUsedOut(
        card=await card_out(call.merchant, used.card), use=_use(used.use), replayed=used.replayed
    )


@routes.post(
    "/api/staff/service-cards/use",
    body=CardScanUseIn,
    response=CardUsedOut,
    auth=CASHIER,
    errors=(400, 404, 409),
)
async def use_by_scan(call: Call[CardScanUseIn, None]) -> CardUsedOut:
    """Scan the member's card QR (or type the code) and take one use of their card for `product_id`."""
    now = datetime.now(UTC)
    field, raw = ("qr", call.body.qr) if call.body.qr is not None else ("member_code", call.body.member_code)
    secret = call.request.app[RUNTIME].secret
    member = await member_qr.resolve_scan(call.merchant, raw or "", secret=secret, now=now, field=field)
    used = await service_cards.use_for_member(
        call.merchant, member, call.body.product_id, key=call.body.idempotency_key, staff=call.staff, now=now
    )
    return CardUsedOut(
        card=await card_out(call.merchant, used.card), use=_use(used.use), replayed=used.replayed
    )


@routes.get(
    "/api/mp/{merchant_slug}/service-cards", path_model=MerchantPath, response=ServiceCardsOut, auth=MEMBER
)
async def my_cards(call: Call[None, MerchantPath]) -> ServiceCardsOut:
    """The member's count and time cards: usable ones first, with uses left, validity and last uses."""
    views = await service_cards.member_cards(call.merchant.id, call.member.id, datetime.now(UTC))
    return ServiceCardsOut(
        cards=[await card_out(call.merchant, v.card, last=v.last_uses, product=v.product) for v in views]
    )
