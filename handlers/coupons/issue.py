"""Coupon templates (create, replace, delete) and the one issuance function every source uses.

`issue` runs in ONE transaction that locks the template row, so issuances of a template serialize:
the total stock (`issued < total_stock`) and the per-member limit are exact however many requests
race. The issuance key is unique per merchant: a repeated key returns the coupon it issued first
(with another member or template it is an `idempotency_mismatch`). Each issuance writes one
`issued` CouponEvent. Sources: `mall`, `tier_gift`, `new_member`, `manual` (see `handlers.coupons.redeem`).

Once a template has issued coupons its terms (kind, threshold, amounts, gift) are frozen — issued
coupons read them at the till; name, stock, limits, stores, future validity and `active` may change.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import (
    Conflict,
    DomainError,
    ErrorCode,
    IdempotencyMismatch,
    NotFound,
    ValidationError,
)
from handlers.members.lookup import CODE_ALPHABET
from handlers.rules import coupons as rules
from handlers.rules.errors import RuleError
from models.coupon import Coupon, CouponEvent, CouponKind, CouponTemplate
from models.member import Member
from models.merchant import Merchant, Store

COUPON_CODE_LENGTH = 10  # 32**10 ≈ 1.1e15; member codes have 8 characters, so the two never mix up
MAX_CODE_ATTEMPTS = 5
MAX_KEY = 128
MAX_SOURCE = 24
MAX_STORES = 200


class CouponCode(StrEnum):
    """The coupon-specific error codes (the `code` of a CouponError, as the JSON error shows it)."""

    NOT_FOUND = "coupon_not_found"
    USED = "coupon_used"
    EXPIRED = "coupon_expired"
    NOT_APPLICABLE = "coupon_not_applicable"
    REVOKED = "coupon_revoked"
    TEMPLATE_NOT_FOUND = "coupon_template_not_found"
    INACTIVE = "coupon_template_inactive"
    OUT_OF_STOCK = "coupon_out_of_stock"
    LIMIT_REACHED = "coupon_limit_reached"


class CouponError(DomainError):
    """A coupon refusal. `code` carries a `CouponCode` value (a str, like every ErrorCode)."""

    def __init__(self, code: CouponCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.coupon_code = code
        self.code = ErrorCode(code.value)


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template as the admin describes it (validated by `check_spec`)."""

    name: str
    terms: rules.Terms
    validity: rules.Validity
    total_stock: int | None = None
    limit_per_member: int | None = None
    store_codes: tuple[str, ...] | None = None
    active: bool = True


def terms_of(template: CouponTemplate) -> rules.Terms:
    return rules.Terms(
        kind=str(template.kind.value if isinstance(template.kind, CouponKind) else template.kind),
        threshold_fen=template.threshold_fen,
        amount_off_fen=template.amount_off_fen,
        percent_off=template.percent_off,
        cap_fen=template.cap_fen,
        gift_name=template.gift_name,
    )


def validity_of(template: CouponTemplate) -> rules.Validity:
    return rules.Validity(template.valid_from, template.valid_until, template.valid_days)


def stores_of(template: CouponTemplate) -> tuple[str, ...] | None:
    return tuple(template.store_codes) if template.store_codes is not None else None


def describe(template: CouponTemplate) -> str:
    return rules.describe(terms_of(template))


# Templates ----------------------------------------------------------------------------------------


async def check_spec(merchant: Merchant, spec: TemplateSpec) -> None:
    """Raise a ValidationError naming the field unless the template is consistent."""
    if not spec.name.strip():
        raise ValidationError("name: 请填写券名称", field="name")
    try:
        rules.check_terms(spec.terms)
        rules.check_validity(spec.validity)
    except RuleError as exc:
        raise ValidationError(f"{exc.field}: {exc.message}", field=exc.field) from None
    for name in ("total_stock", "limit_per_member"):
        value = getattr(spec, name)
        if value is not None and not 1 <= value <= 100_000_000:
            raise ValidationError(f"{name}: 应为 1–100000000，或不限（null）", field=name)
    if spec.store_codes is not None:
        if not spec.store_codes or len(spec.store_codes) > MAX_STORES:
            raise ValidationError(f"store_codes: 1–{MAX_STORES} 个门店，或不限（null）", field="store_codes")
        rows = await Store.filter(merchant_id=merchant.id, code__in=list(spec.store_codes)).values_list(
            "code", flat=True
        )
        known = {str(code) for code in rows}
        missing = [code for code in spec.store_codes if code not in known]
        if missing:
            raise ValidationError(f"store_codes: 门店 {missing[0]} 不存在", field="store_codes")


def _columns(spec: TemplateSpec) -> dict[str, Any]:
    terms, validity = spec.terms, spec.validity
    return {
        "name": spec.name.strip(),
        "kind": CouponKind(terms.kind),
        "threshold_fen": terms.threshold_fen,
        "amount_off_fen": terms.amount_off_fen,
        "percent_off": terms.percent_off,
        "cap_fen": terms.cap_fen,
        "gift_name": terms.gift_name.strip(),
        "valid_from": validity.valid_from,
        "valid_until": validity.valid_until,
        "valid_days": validity.days,
        "total_stock": spec.total_stock,
        "limit_per_member": spec.limit_per_member,
        "store_codes": list(dict.fromkeys(spec.store_codes)) if spec.store_codes is not None else None,
        "active": spec.active,
    }


async def create_template(merchant: Merchant, spec: TemplateSpec, *, actor: str) -> CouponTemplate:
    await check_spec(merchant, spec)
    columns = _columns(spec)
    async with in_transaction():
        template = await CouponTemplate.create(merchant_id=merchant.id, **columns)
        await audit_log.record(
            merchant.id, actor, "coupon_template.create", f"template:{template.id}", **_auditable(columns)
        )
    return template


async def get_template(merchant: Merchant, template_id: int, *, lock: bool = False) -> CouponTemplate:
    query = CouponTemplate.select_for_update() if lock else CouponTemplate
    template = await query.get_or_none(id=template_id, merchant_id=merchant.id)
    if template is None:
        raise CouponError(CouponCode.TEMPLATE_NOT_FOUND, "券模板不存在", field="template_id")
    return template


async def replace_template(
    merchant: Merchant, template_id: int, spec: TemplateSpec, *, actor: str
) -> CouponTemplate:
    """Replace a template; with coupons issued the terms may not change and the stock not drop below."""
    await check_spec(merchant, spec)
    columns = _columns(spec)
    async with in_transaction():
        template = await get_template(merchant, template_id, lock=True)
        if template.issued:
            for field in fields(rules.Terms):
                if getattr(terms_of(template), field.name) != getattr(spec.terms, field.name):
                    raise Conflict(f"{field.name}: 已发放的券不能修改优惠内容，请新建模板", field=field.name)
            if spec.total_stock is not None and spec.total_stock < template.issued:
                raise Conflict(f"total_stock: 已发放 {template.issued} 张，总量不能更少", field="total_stock")
        template.update_from_dict(columns)
        await template.save()
        await audit_log.record(
            merchant.id, actor, "coupon_template.replace", f"template:{template.id}", **_auditable(columns)
        )
    return template


async def delete_template(merchant: Merchant, template_id: int, *, actor: str) -> None:
    """Delete a template that never issued a coupon (otherwise deactivate it instead)."""
    async with in_transaction():
        template = await get_template(merchant, template_id, lock=True)
        if template.issued or await Coupon.filter(template_id=template.id).exists():
            raise Conflict("已发放过的券模板不能删除，可将其停用（active=false）", field="template_id")
        await template.delete()
        await audit_log.record(merchant.id, actor, "coupon_template.delete", f"template:{template_id}")


def _auditable(columns: dict[str, object]) -> dict[str, object]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, StrEnum) else v
        for k, v in columns.items()
    }


# Issuance -----------------------------------------------------------------------------------------


def new_coupon_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(COUPON_CODE_LENGTH))


async def issue(
    merchant: Merchant,
    member_id: int,
    template_id: int,
    *,
    source: str,
    key: str,
    now: datetime,
    actor: str = "system",
) -> Coupon:
    """Issue one coupon of the template to the member (exact stock and limits; a repeated key replays)."""
    coupon, _ = await issue_once(
        merchant, member_id, template_id, source=source, key=key, now=now, actor=actor
    )
    return coupon


async def issue_once(
    merchant: Merchant,
    member_id: int,
    template_id: int,
    *,
    source: str,
    key: str,
    now: datetime,
    actor: str = "system",
) -> tuple[Coupon, bool]:
    """`issue`, also telling whether this call created the coupon (False: the key was used before)."""
    if not 1 <= len(key) <= MAX_KEY or not 1 <= len(source) <= MAX_SOURCE:
        raise ValueError("issuance key (1–128) and source (1–24) must be given")
    async with in_transaction():
        template = await get_template(merchant, template_id, lock=True)
        replay = await Coupon.get_or_none(merchant_id=merchant.id, issue_key=key)
        if replay is not None:
            return _same_request(replay, member_id, template_id), False
        await _check_issuable(merchant, template, member_id)
        valid_from, valid_until = rules.window(
            validity_of(template), issued_at=now, timezone=merchant.timezone
        )
        if valid_until <= now:
            raise CouponError(CouponCode.EXPIRED, "该券已过有效期，不能发放", field="template_id")
        coupon = await _create(merchant, template, member_id, source, key, valid_from, valid_until)
        template.issued += 1
        await template.save(update_fields=["issued"])
        await CouponEvent.create(
            merchant_id=merchant.id, coupon_id=coupon.id, kind="issued", actor=actor[:32], reference=source
        )
    return coupon, True


def _same_request(coupon: Coupon, member_id: int, template_id: int) -> Coupon:
    if coupon.member_id != member_id or coupon.template_id != template_id:
        raise IdempotencyMismatch()
    return coupon


async def _check_issuable(merchant: Merchant, template: CouponTemplate, member_id: int) -> None:
    member = await Member.get_or_none(id=member_id, merchant_id=merchant.id)
    if member is None or member.anonymized_at is not None:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND, field="member")
    if not template.active:
        raise CouponError(CouponCode.INACTIVE, "该券已停用", field="template_id")
    if template.total_stock is not None and template.issued >= template.total_stock:
        raise CouponError(CouponCode.OUT_OF_STOCK, "该券已发完", field="template_id")
    if template.limit_per_member is not None:
        held = await Coupon.filter(template_id=template.id, member_id=member_id).count()
        if held >= template.limit_per_member:
            raise CouponError(
                CouponCode.LIMIT_REACHED, f"该券每人限领 {template.limit_per_member} 张", field="template_id"
            )


async def _create(
    merchant: Merchant,
    template: CouponTemplate,
    member_id: int,
    source: str,
    key: str,
    valid_from: datetime,
    valid_until: datetime,
) -> Coupon:
    """Insert with a fresh random code, retrying a (rare) code collision inside a savepoint."""
    for _ in range(MAX_CODE_ATTEMPTS):
        code = new_coupon_code()
        try:
            async with in_transaction():
                return await Coupon.create(
                    merchant_id=merchant.id,
                    template_id=template.id,
                    member_id=member_id,
                    code=code,
                    source=source,
                    issue_key=key,
                    valid_from=valid_from,
                    valid_until=valid_until,
                )
        except IntegrityError:
            if await Coupon.filter(merchant_id=merchant.id, code=code).exists():
                continue
            raced = await Coupon.get_or_none(merchant_id=merchant.id, issue_key=key)
            if raced is not None:  # the same key, concurrently, for another template
                _same_request(raced, member_id, template.id)
            raise
    raise RuntimeError("could not allocate a unique coupon code")
