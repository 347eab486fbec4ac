"""H5 pages members open from the chat: the member card (`GET /card/{merchant_slug}?t=<link token>`).

The link token (see `handlers.members.member_qr.link_token`) names the merchant's member and expires after ten
minutes; the page refreshes its QR from `/card/{merchant_slug}/qr.svg` with the same token. Failures
are friendly HTML pages (403 for a forged or expired link, 404 for an unknown merchant), never JSON.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from aiohttp import web

from handlers.core.errors import DomainError
from handlers.loyalty import points_view, tiers
from handlers.members import lookup as members
from handlers.members import member_qr
from handlers.staff.merchants import SLUG
from models.member import Member
from models.merchant import Merchant
from webhooks.appkeys import RENDERER, RUNTIME

QR_REFRESH_SECONDS = 50
TEMPLATE = "pages/card.html"


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


def _problem(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    html = request.app[RENDERER].page(TEMPLATE, error=True, title=title, detail=detail, nonce=nonce)
    return web.Response(text=html, status=status, content_type="text/html", headers=_headers(nonce))


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


async def _holder(request: web.Request, now: datetime) -> tuple[Merchant, Member, str]:
    """The merchant and member a card link names, or `_Refused` with a page to show."""
    slug = request.match_info["merchant_slug"]
    merchant = await Merchant.get_or_none(slug=slug) if SLUG.match(slug) else None
    if merchant is None:
        raise _Refused(404, "页面不存在", "没有找到这家商户。")
    token = request.query.get("t", "")
    try:
        member_id = member_qr.verify_link(request.app[RUNTIME].secret, merchant.id, token, now=now)
        member = await members.resolve(merchant, member_id=member_id)
    except DomainError as exc:
        detail = "链接已过期，" if "过期" in exc.message else "链接无效，"
        raise _Refused(403, "无法打开会员卡", detail + "请回到公众号重新发送“会员卡”获取新链接。") from None
    if member.anonymized_at is not None:
        raise _Refused(403, "无法打开会员卡", "该会员卡已注销。")
    return merchant, member, token


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


def setup(app: web.Application) -> None:
    app.router.add_get("/card/{merchant_slug}", card_page)
    app.router.add_get("/card/{merchant_slug}/qr.svg", card_qr)
