"""Merchant and store administration: create, list, show, with WeChat credential validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import config_cache, queries
from handlers.core.errors import Conflict, ErrorCode, NotFound, ValidationError
from models.merchant import Merchant, Store

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
AES_KEY = re.compile(r"^[A-Za-z0-9]{43}$")
TOKEN = re.compile(r"^[A-Za-z0-9]{3,32}$")


@dataclass(frozen=True, slots=True)
class MerchantInput:
    slug: str
    name: str
    timezone: str = "Asia/Shanghai"
    oa_appid: str = ""
    oa_secret: str = ""
    oa_token: str = ""
    oa_aes_key: str = ""
    mp_appid: str = ""
    mp_secret: str = ""


def validate_merchant(data: MerchantInput) -> None:
    if not SLUG.match(data.slug):
        raise ValidationError("slug 须为 2–63 个小写字母、数字或 '-'，且以字母或数字开头", field="slug")
    if not data.name.strip() or len(data.name) > 128:
        raise ValidationError("name 须为 1–128 个字符", field="name")
    try:
        ZoneInfo(data.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"timezone 不是已知的时区：{data.timezone!r}", field="timezone") from exc
    if data.oa_aes_key and not AES_KEY.match(data.oa_aes_key):
        raise ValidationError("oa_aes_key 须为 43 位字母或数字（微信的 EncodingAESKey）", field="oa_aes_key")
    if data.oa_token and not TOKEN.match(data.oa_token):
        raise ValidationError("oa_token 须为 3–32 位字母或数字", field="oa_token")
    if bool(data.oa_appid) != bool(data.oa_secret):
        raise ValidationError("oa_appid 与 oa_secret 须同时填写", field="oa_secret")
    if bool(data.mp_appid) != bool(data.mp_secret):
        raise ValidationError("mp_appid 与 mp_secret 须同时填写", field="mp_secret")


async def create_merchant(data: MerchantInput, *, store_name: str = "总店") -> Merchant:
    """Create a merchant with its first store."""
    validate_merchant(data)
    try:
        async with in_transaction():
            merchant = await Merchant.create(**_fields(data))
            await Store.create(merchant=merchant, code="main", name=store_name)
    except IntegrityError as exc:
        raise Conflict(f"商户 {data.slug!r} 已存在", field="slug") from exc
    return merchant


def _fields(data: MerchantInput) -> dict[str, Any]:
    return {name: getattr(data, name) for name in data.__slots__}


async def get_merchant(slug: str) -> Merchant:
    merchant = await Merchant.get_or_none(slug=slug)
    if merchant is None:
        raise NotFound(f"商户 {slug!r} 不存在", code=ErrorCode.MERCHANT_NOT_FOUND)
    return merchant


async def merchant_by_id(merchant_id: int) -> Merchant | None:
    """The merchant row, from this process's configuration cache when the request observed a version."""

    async def load() -> Merchant | None:
        return await queries.first(Merchant, id=merchant_id)

    return await config_cache.cached(("merchant", merchant_id), load)


async def list_merchants() -> list[Merchant]:
    return await Merchant.all().order_by("id")
