"""Members' invite codes and staff acquisition codes: made through WeChat once, cached, reused.

- A member's Official Account QR code carries scene `ref_<member code>` (`handlers.members.registration`
  credits the referrer when a follow through it creates a member). It is permanent (`QR_LIMIT_STR_SCENE`)
  when the merchant chose so (`Merchant.invite_qr_permanent`), else temporary for 30 days and made again
  once less than `RENEW_MARGIN` is left, so a code a member passes on stays valid for at least a week.
  A permanent code, once made, is kept even if the merchant switches to temporary ones.
- WeChat allows 100,000 permanent codes per account. Members' permanent codes stop at
  `MEMBER_PERMANENT_LIMIT`, keeping the rest for staff; past it, or when WeChat answers 45029, a member
  gets a temporary code instead (logged; the refusal is remembered for a day). A staff acquisition code
  (`staff_<id>`, for print) is always permanent: past the cap it is refused (409).
- A member's mini-program code (`getwxacodeunlimit`, scene `r=<member code>`, page `INVITE_PAGE`) never
  expires: its picture is kept in the row.
- For chat image messages, the QR picture (drawn here from the code's content URL) is uploaded as
  temporary media; the media_id is reused until `MEDIA_MARGIN` before WeChat forgets it (3 days).

Each code is asked of WeChat at most once at a time, across processes: a short Redis lock per code, and
whoever waits re-reads the row the holder wrote.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from redis.asyncio import Redis
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, NotFound
from handlers.members import member_qr
from handlers.wechat.client import (
    QR_MAX_EXPIRE_SECONDS,
    AppCredentials,
    WeChatClient,
    mp_credentials,
    oa_credentials,
)
from handlers.wechat.errors import QrCodeLimitReached, WeChatUnavailable
from models.invite import InviteCode, InviteKind
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff

log = logging.getLogger(__name__)
T = TypeVar("T")

PERMANENT_LIMIT = 100_000  # WeChat's permanent QR codes per account
STAFF_RESERVE = 1_000
MEMBER_PERMANENT_LIMIT = PERMANENT_LIMIT - STAFF_RESERVE
TEMPORARY_SECONDS = QR_MAX_EXPIRE_SECONDS  # 30 days
RENEW_MARGIN = timedelta(days=7)
MEDIA_LIFETIME = timedelta(days=3)
MEDIA_MARGIN = timedelta(hours=1)
INVITE_PAGE = "pages/index/index"  # the mini-program page an invite code opens (reads `scene`)
PAGE_LINK_TTL_SECONDS = 86_400
LOCK_MS = 15_000  # longer than one WeChat call may take (the client gives up after 10 s)
CAP_SECONDS = 86_400  # how long a 45029 refusal is remembered
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def member_scene(member: Member) -> str:
    return f"ref_{member.code}"


def staff_scene(staff_id: int) -> str:
    return f"staff_{staff_id}"


def wxacode_scene(member: Member) -> str:
    """At most 32 characters of WeChat's scene alphabet: `r=` and the 8-character member code."""
    return f"r={member.code}"


def _fresh(row: InviteCode | None, appid: str, now: datetime) -> bool:
    """A ticket of the merchant's current account that is permanent or has more than the margin left."""
    if row is None or not row.ticket or row.appid != appid:
        return False
    return row.permanent or (row.expires_at is not None and row.expires_at - now > RENEW_MARGIN)


def _full_key(appid: str, limit: int) -> str:
    """Remembers (a day) that `appid` reached `limit` permanent codes: ours for members, or WeChat's."""
    return f"invite:permanent-full:{appid}:{limit}"


async def _known_full(redis: Redis, appid: str, limit: int) -> bool:
    return bool(await redis.exists(_full_key(appid, limit), _full_key(appid, PERMANENT_LIMIT)))


async def _once(
    redis: Redis, key: str, read: Callable[[], Awaitable[T | None]], make: Callable[[], Awaitable[T]]
) -> T:
    """`read()` if it finds something, else `make()` by one caller at a time (the others wait and read)."""
    found = await read()
    if found is not None:
        return found
    owner = secrets.token_hex(8)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_MS / 1000
    while True:
        if await redis.set(key, owner, nx=True, px=LOCK_MS):
            try:
                found = await read()  # made by the previous holder between our read and our lock
                return found if found is not None else await make()
            finally:
                await redis.eval(_RELEASE, 1, key, owner)  # type: ignore[misc]  # redis-py's union type
        await asyncio.sleep(0.05)
        found = await read()
        if found is not None:
            return found
        if loop.time() > deadline:
            raise WeChatUnavailable(-1, "another request is still making this code")


async def _row(merchant_id: int, kind: InviteKind, scene: str) -> InviteCode | None:
    return await InviteCode.get_or_none(merchant_id=merchant_id, kind=kind, scene=scene)


async def _store(merchant_id: int, kind: InviteKind, scene: str, values: dict[str, Any]) -> InviteCode:
    """Insert or overwrite the code's row (the caller holds its lock)."""
    key: dict[str, Any] = {"merchant_id": merchant_id, "kind": kind, "scene": scene}
    if not await InviteCode.filter(**key).update(**values):
        try:
            return await InviteCode.create(**key, **values)
        except IntegrityError:  # a holder whose lock lapsed wrote it meanwhile: ours is as good
            await InviteCode.filter(**key).update(**values)
    return await InviteCode.get(**key)


def _ticket_values(
    appid: str, ticket: str, url: str, expire_seconds: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "appid": appid,
        "ticket": ticket,
        "url": url,
        "permanent": expire_seconds is None,
        "expires_at": None if expire_seconds is None else now + timedelta(seconds=expire_seconds),
        "media_id": "",  # a new ticket is a new picture
        "media_expires_at": None,
    }


async def _permanent_left(redis: Redis, appid: str, limit: int) -> bool:
    """Whether the account may make one more permanent code under `limit` (counted here)."""
    if await _known_full(redis, appid, limit):
        return False
    used = await InviteCode.filter(appid=appid, kind=InviteKind.OA_QR, permanent=True).count()
    if used >= limit:
        await _remember_full(redis, appid, limit)
    return used < limit


async def _remember_full(redis: Redis, appid: str, limit: int = PERMANENT_LIMIT) -> None:
    await redis.set(_full_key(appid, limit), "1", ex=CAP_SECONDS)


# A member's Official Account invite code -----------------------------------------------------------


async def member_code(
    wechat: WeChatClient, merchant: Merchant, member: Member, *, now: datetime
) -> InviteCode:
    """The member's invite QR code (its ticket and content URL), made or renewed when needed.

    Raises `WeChatNotConfigured` for a merchant without an Official Account, `WeChatError` when WeChat
    refuses or cannot be reached."""
    app = oa_credentials(merchant)
    scene = member_scene(member)
    wants_permanent = merchant.invite_qr_permanent

    async def read() -> InviteCode | None:
        row = await _row(merchant.id, InviteKind.OA_QR, scene)
        if row is None or not _fresh(row, app.appid, now):
            return None
        upgrade = wants_permanent and not row.permanent  # the merchant switched to permanent codes
        if upgrade and not await _known_full(wechat.redis, app.appid, MEMBER_PERMANENT_LIMIT):
            return None  # try to make one
        return row

    async def make() -> InviteCode:
        row = await _row(merchant.id, InviteKind.OA_QR, scene)
        permanent = wants_permanent and await _permanent_left(wechat.redis, app.appid, MEMBER_PERMANENT_LIMIT)
        if wants_permanent and not permanent:
            log.warning(
                "members' permanent invite codes used up: a temporary one instead", extra=_log(merchant)
            )
            if row is not None and _fresh(row, app.appid, now):
                return row
        values = await _create(wechat, merchant, app, scene, permanent, now)
        return await _store(merchant.id, InviteKind.OA_QR, scene, values)

    return await _once(wechat.redis, f"invite:lock:{merchant.id}:oa:{scene}", read, make)


async def _create(
    wechat: WeChatClient, merchant: Merchant, app: AppCredentials, scene: str, permanent: bool, now: datetime
) -> dict[str, Any]:
    if permanent:
        try:
            made = await wechat.create_qrcode(app, scene, None)
        except QrCodeLimitReached:
            log.warning(
                "wechat refused a permanent invite code (45029): a temporary one instead",
                extra=_log(merchant),
            )
            await _remember_full(wechat.redis, app.appid)
        else:
            return _ticket_values(app.appid, made.ticket, made.url, None, now)
    made = await wechat.create_qrcode(app, scene, TEMPORARY_SECONDS)
    return _ticket_values(app.appid, made.ticket, made.url, made.expire_seconds, now)


# A staff member's acquisition code -----------------------------------------------------------------


async def staff_code(
    wechat: WeChatClient, merchant: Merchant, staff: Staff, *, now: datetime, actor: str
) -> InviteCode:
    """The permanent acquisition QR code of an active staff member of the merchant (404 otherwise;
    the caller has already limited `staff` to what the acting account may see)."""
    if staff.merchant_id != merchant.id or not staff.active:
        raise NotFound("店员不存在或已停用", field="staff_id")
    app = oa_credentials(merchant)
    scene = staff_scene(staff.id)

    async def read() -> InviteCode | None:
        row = await _row(merchant.id, InviteKind.OA_QR, scene)
        return row if row is not None and row.permanent and _fresh(row, app.appid, now) else None

    async def make() -> InviteCode:
        if not await _permanent_left(wechat.redis, app.appid, PERMANENT_LIMIT):
            raise _cap_reached()
        try:
            made = await wechat.create_qrcode(app, scene, None)
        except QrCodeLimitReached:
            await _remember_full(wechat.redis, app.appid)
            raise _cap_reached() from None
        async with in_transaction():
            row = await _store(
                merchant.id,
                InviteKind.OA_QR,
                scene,
                _ticket_values(app.appid, made.ticket, made.url, None, now),
            )
            await audit_log.record(
                merchant.id, actor, "invite.staff_qr", f"staff:{staff.id}", appid=app.appid
            )
        return row

    return await _once(wechat.redis, f"invite:lock:{merchant.id}:oa:{scene}", read, make)


def _cap_reached() -> Conflict:
    return Conflict(f"公众号永久二维码已达 {PERMANENT_LIMIT} 个上限，无法再生成店员二维码", field="staff_id")


# Pictures --------------------------------------------------------------------------------------------


def qr_png(code: InviteCode, *, box_size: int = 8) -> bytes:
    return member_qr.qr_png(code.url, box_size=box_size)


def qr_svg(code: InviteCode) -> str:
    return member_qr.qr_svg(code.url)


async def image_media(wechat: WeChatClient, merchant: Merchant, code: InviteCode, *, now: datetime) -> str:
    """The media_id of the code's picture for an image message, uploaded when there is none still valid."""
    app = oa_credentials(merchant)

    async def read() -> str | None:
        row = await InviteCode.get_or_none(id=code.id, ticket=code.ticket)
        if row is None or not row.media_id or row.media_expires_at is None:
            return None
        return row.media_id if row.media_expires_at - now > MEDIA_MARGIN else None

    async def make() -> str:
        media_id = await wechat.upload_image(app, qr_png(code), name=f"invite-{code.id}")
        await InviteCode.filter(id=code.id, ticket=code.ticket).update(
            media_id=media_id, media_expires_at=now + MEDIA_LIFETIME
        )
        return media_id

    return await _once(wechat.redis, f"invite:lock:{merchant.id}:media:{code.id}", read, make)


# A member's mini-program code ------------------------------------------------------------------------


async def member_wxacode(wechat: WeChatClient, merchant: Merchant, member: Member) -> bytes:
    """The member's mini-program invite code (PNG), asked of WeChat once and kept."""
    app = mp_credentials(merchant)
    scene = wxacode_scene(member)

    async def read() -> bytes | None:
        row = await _row(merchant.id, InviteKind.WXACODE, scene)
        return row.image if row is not None and row.image and row.appid == app.appid else None

    async def make() -> bytes:
        image = await wechat.get_unlimited_wxacode(app, scene, INVITE_PAGE, check_path=False)
        values = {"appid": app.appid, "permanent": True, "image": image}
        await _store(merchant.id, InviteKind.WXACODE, scene, values)
        return image

    return await _once(wechat.redis, f"invite:lock:{merchant.id}:wxa:{scene}", read, make)


# The member's invite page ------------------------------------------------------------------------


def page_token(secret: bytes, merchant_id: int, member_id: int, *, now: datetime) -> str:
    """A signed link token that opens the member's invite page for a day."""
    return member_qr.link_token(
        secret, merchant_id, member_id, now=now, ttl=PAGE_LINK_TTL_SECONDS, domain=member_qr.INVITE_LINK
    )


def page_url(base_url: str, merchant_slug: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/invite/{merchant_slug}?t={token}"


# The merchant's choice -------------------------------------------------------------------------------


async def set_permanent(merchant: Merchant, permanent: bool, *, actor: str) -> None:
    """Members' invite codes from now on: permanent or 30-day ones (codes already made are kept)."""
    async with in_transaction():
        await Merchant.filter(id=merchant.id).update(invite_qr_permanent=permanent)
        await audit_log.record(merchant.id, actor, "invite.settings", "", permanent=permanent)
    merchant.invite_qr_permanent = permanent


async def permanent_used(merchant: Merchant) -> int:
    """Permanent QR codes memberbot made for the merchant's current Official Account."""
    if not merchant.oa_appid:
        return 0
    return await InviteCode.filter(appid=merchant.oa_appid, kind=InviteKind.OA_QR, permanent=True).count()


def _log(merchant: Merchant) -> dict[str, Any]:
    return {"merchant": merchant.slug}
