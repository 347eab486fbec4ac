"""H5 pages members open from the chat: the member card (`GET /card/{merchant_slug}?t=<link token>`) and
the invite page (`GET /invite/{merchant_slug}?t=<link token>`).

The card's link token (see `handlers.members.member_qr.link_token`) names the merchant's member and
expires after ten minutes; the page refreshes its QR from `/card/{merchant_slug}/qr.svg` with the same
token. The invite page's token (`handlers.members.invites.page_token`, a day, signed apart from the card)
shows the member's invite QR code (`/invite/{merchant_slug}/qr.png`), how many people they brought and
the points it earned them. Failures are friendly HTML pages (403 for a forged or expired link, 404 for
an unknown merchant), never JSON.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from handlers.core.errors import DomainError
from handlers.loyalty import points_view, referrals, tiers
from handlers.members import invites, member_qr
from handlers.members import lookup as members
from handlers.staff.merchants import SLUG
from handlers.wechat.errors import WeChatError, WeChatNotConfigured
from models.invite import InviteCode
from models.member import Member
from models.merchant import Merchant
from webhooks.appkeys import RENDERER, RUNTIME, WECHAT

QR_REFRESH_SECONDS = 50
TEMPLATE = "pages/card.html"
INVITE_TEMPLATE = "pages/invite.html"


def _headers(nonce: str = "") -> dict[str, str]:
    policy = "default-src 'none'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    if nonce:
        policy += f"; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'"
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
    }


def _problem(
    request: web.Request, status: int, title: str, detail: str, template: str = TEMPLATE
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    html = request.app[RENDERER].page(template, error=True, title=title, detail=detail, nonce=nonce)
    return web.Response(text=html, status=status, content_type="text/html", headers=_headers(nonce))


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


async def _linked(
    request: web.Request, now: datetime, domain: bytes, title: str, keyword: str
) -> tuple[Merchant, Member, str]:
    """The merchant and member a page link names (its token signed for `domain`), or `_Refused` with
    a page to show: `title` heads it and `keyword` is what the member sends in chat for a new link."""
    slug = request.match_info["merchant_slug"]
    merchant = await Merchant.get_or_none(slug=slug) if SLUG.match(slug) else None
    if merchant is None:
        raise _Refused(404, "页面不存在", "没有找到这家商户。")
    token = request.query.get("t", "")
    try:
        member_id = member_qr.verify_link(
            request.app[RUNTIME].secret, merchant.id, token, now=now, domain=domain
        )
        member = await members.resolve(merchant, member_id=member_id)
    except DomainError as exc:
        detail = "链接已过期，" if "过期" in exc.message else "链接无效，"
        raise _Refused(403, title, f"{detail}请回到公众号重新发送“{keyword}”获取新链接。") from None
    return merchant, member, token


async def _holder(request: web.Request, now: datetime) -> tuple[Merchant, Member, str]:
    return await _linked(request, now, member_qr.CARD_LINK, "无法打开会员卡", "会员卡")


async def _inviter(request: web.Request, now: datetime) -> tuple[Merchant, Member, str]:
    return await _linked(request, now, member_qr.INVITE_LINK, "无法打开邀请页", "邀请")


async def card_page(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    try:
        merchant, member, token = await _holder(request, now)
    except _Refused as refused:
        return _problem(request, refused.status, refused.title, refused.detail)
    summary = await points_view.summary(merchant.id, member.id, now=now)
    view = await tiers.current(merchant, member.id, now=now)
    nonce = secrets.token_urlsafe(16)
    html = request.app[RENDERER].page(
        TEMPLATE,
        error=False,
        nonce=nonce,
        merchant_name=merchant.name,
        member_code=member.code,
        member_name=member.name or "",
        tier_name=view.tier.name,
        benefits=member_qr.benefit_lines(view.tier.benefits),
        progress=view.progress.message if view.progress else "",
        balance=summary.balance,
        pending=summary.pending,
        qr_url=f"/card/{merchant.slug}/qr.svg?t={token}",
        refresh_ms=QR_REFRESH_SECONDS * 1000,
    )
    return web.Response(text=html, content_type="text/html", headers=_headers(nonce))


async def card_qr(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    try:
        merchant, member, _ = await _holder(request, now)
    except _Refused as refused:
        return _problem(request, refused.status, refused.title, refused.detail)
    issued = member_qr.issue_token(merchant, member.id, secret=request.app[RUNTIME].secret, now=now)
    return web.Response(text=member_qr.qr_svg(issued.token), content_type="image/svg+xml", headers=_headers())


async def _invite_code(request: web.Request, merchant: Merchant, member: Member, now: datetime) -> InviteCode:
    return await invites.member_code(request.app[WECHAT], merchant, member, now=now)


async def invite_page(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    try:
        merchant, member, token = await _inviter(request, now)
    except _Refused as refused:
        return _problem(request, refused.status, refused.title, refused.detail, INVITE_TEMPLATE)
    stats = await referrals.referrer_stats(merchant.id, member.id)
    code, note = None, ""
    try:
        code = await _invite_code(request, merchant, member, now)
    except WeChatNotConfigured:
        note = "本店暂未开通邀请二维码。"
    except WeChatError:
        note = "邀请二维码暂时没有生成，请稍后刷新页面。"
    expires = code.expires_at if code is not None else None
    nonce = secrets.token_urlsafe(16)
    html = request.app[RENDERER].page(
        INVITE_TEMPLATE,
        error=False,
        nonce=nonce,
        merchant_name=merchant.name,
        member_code=member.code,
        invited=stats.invited,
        rewarded=stats.rewarded,
        points=stats.points,
        qr_url=f"/invite/{merchant.slug}/qr.png?t={token}" if code is not None else "",
        expires=expires.astimezone(ZoneInfo(merchant.timezone)).date().isoformat() if expires else "",
        note=note,
    )
    return web.Response(text=html, content_type="text/html", headers=_headers(nonce))


async def invite_qr(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    try:
        merchant, member, _ = await _inviter(request, now)
        code = await _invite_code(request, merchant, member, now)
    except _Refused as refused:
        return _problem(request, refused.status, refused.title, refused.detail, INVITE_TEMPLATE)
    except (WeChatError, WeChatNotConfigured):
        return _problem(
            request, 503, "二维码暂不可用", "邀请二维码暂时没有生成，请稍后再试。", INVITE_TEMPLATE
        )
    return web.Response(body=invites.qr_png(code), content_type="image/png", headers=_headers())


def setup(app: web.Application) -> None:
    app.router.add_get("/card/{merchant_slug}", card_page)
    app.router.add_get("/card/{merchant_slug}/qr.svg", card_qr)
    app.router.add_get("/invite/{merchant_slug}", invite_page)
    app.router.add_get("/invite/{merchant_slug}/qr.png", invite_qr)
