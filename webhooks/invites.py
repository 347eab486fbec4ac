"""Invite codes over HTTP: a member's own (mini-program), staff acquisition codes for print, and the
merchant's choice between permanent and 30-day member codes."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field

from handlers.core.errors import ErrorCode
from handlers.loyalty import referrals
from handlers.members import invites, member_qr
from handlers.staff import roster
from handlers.staff.scope import scope_of
from handlers.wechat.errors import WeChatNotConfigured
from models.invite import InviteCode
from webhooks.api import ApiError, Call, In, IntId, Out, Routes
from webhooks.appkeys import WECHAT
from webhooks.auth import ADMIN, MANAGER, MEMBER
from webhooks.mp import MerchantPath

routes = Routes("invites")


class OfficialAccountQrOut(Out):
    scene: str = Field(description="ref_<member code>: a follow through this code credits the member")
    ticket: str
    url: str = Field(description="the QR code's content, to draw it yourself")
    image_url: str = Field(description="the QR picture on WeChat's server (showqrcode)")
    png: str = Field(description="the QR as a data:image/png;base64 URL")
    permanent: bool
    expires_at: datetime | None = Field(description="null for a permanent code")


class MiniProgramCodeOut(Out):
    scene: str = Field(description="r=<member code>: pass it to POST /login as `scene`")
    page: str = Field(description="the page the code opens")
    png: str = Field(description="the mini-program code as a data:image/png;base64 URL")


class InviteOut(Out):
    official_account: OfficialAccountQrOut | None = Field(description="null: no Official Account")
    miniprogram: MiniProgramCodeOut
    invited: int = Field(description="members this member brought in")
    rewarded: int = Field(description="of them, those whose referral award was given")
    points: int = Field(description="points earned from referral awards (every level)")


class StaffQrPath(In):
    staff_id: IntId


class InviteSettingsIn(In):
    permanent: bool = Field(description="members' invite codes: permanent (true) or 30-day ones (false)")


class InviteSettingsOut(Out):
    permanent: bool
    permanent_used: int = Field(description="permanent QR codes made for the Official Account")
    permanent_limit: int = Field(description="WeChat's cap per account")


def _oa_out(call: Call[None, MerchantPath], code: InviteCode) -> OfficialAccountQrOut:
    return OfficialAccountQrOut(
        scene=code.scene,
        ticket=code.ticket,
        url=code.url,
        image_url=call.request.app[WECHAT].showqrcode_url(code.ticket),
        png=member_qr.png_data_url(invites.qr_png(code)),
        permanent=code.permanent,
        expires_at=code.expires_at,
    )


@routes.get(
    "/api/mp/{merchant_slug}/invite", path_model=MerchantPath, response=InviteOut, auth=MEMBER, errors=(502,)
)
async def my_invite(call: Call[None, MerchantPath]) -> InviteOut:
    """The member's invite codes (Official Account QR and mini-program code) and what they brought."""
    wechat, now = call.request.app[WECHAT], datetime.now(UTC)
    try:
        official: OfficialAccountQrOut | None = _oa_out(
            call, await invites.member_code(wechat, call.merchant, call.member, now=now)
        )
    except WeChatNotConfigured:
        official = None
    image = await invites.member_wxacode(wechat, call.merchant, call.member)
    stats = await referrals.referrer_stats(call.merchant.id, call.member.id)
    return InviteOut(
        official_account=official,
        miniprogram=MiniProgramCodeOut(
            scene=invites.wxacode_scene(call.member),
            page=invites.INVITE_PAGE,
            png=member_qr.png_data_url(image),
        ),
        invited=stats.invited,
        rewarded=stats.rewarded,
        points=stats.points,
    )


async def _staff_code(call: Call[None, StaffQrPath]) -> InviteCode:
    """The code of a staff member the caller may see (a manager: their store's); a merchant without an
    Official Account has none to give (409)."""
    staff = await roster.get_staff(scope_of(call.staff), call.path.staff_id)
    try:
        return await invites.staff_code(
            call.request.app[WECHAT],
            call.merchant,
            staff,
            now=datetime.now(UTC),
            actor=f"staff:{call.staff.id}",
        )
    except WeChatNotConfigured:
        raise ApiError(
            409,
            ErrorCode.CONFLICT,
            "本店未配置公众号（oa_appid 与 oa_secret），无法生成店员二维码",
            field="oa_appid",
        ) from None


def _download(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "private, max-age=3600"}


@routes.get(
    "/api/admin/staff/{staff_id}/qr.png",
    path_model=StaffQrPath,
    auth=MANAGER,
    media="image/png",
    errors=(409, 502),
)
async def staff_qr_png(call: Call[None, StaffQrPath]) -> web.Response:
    """A staff member's permanent acquisition QR code (scene staff_<id>) as a PNG for print (a manager:
    their store's staff)."""
    code = await _staff_code(call)
    png = invites.qr_png(code, box_size=16)
    return web.Response(
        body=png, content_type="image/png", headers=_download(f"staff-{call.path.staff_id}.png")
    )


@routes.get(
    "/api/admin/staff/{staff_id}/qr.svg",
    path_model=StaffQrPath,
    auth=MANAGER,
    media="image/svg+xml",
    errors=(409, 502),
)
async def staff_qr_svg(call: Call[None, StaffQrPath]) -> web.Response:
    """The same code as an SVG document (scales to any print size)."""
    code = await _staff_code(call)
    svg = invites.qr_svg(code).encode()
    return web.Response(
        body=svg, content_type="image/svg+xml", headers=_download(f"staff-{call.path.staff_id}.svg")
    )


async def _settings(call: Call[None, None] | Call[InviteSettingsIn, None]) -> InviteSettingsOut:
    return InviteSettingsOut(
        permanent=call.merchant.invite_qr_permanent,
        permanent_used=await invites.permanent_used(call.merchant),
        permanent_limit=invites.PERMANENT_LIMIT,
    )


@routes.get("/api/admin/invite/settings", response=InviteSettingsOut, auth=MANAGER)
async def get_invite_settings(call: Call[None, None]) -> InviteSettingsOut:
    """Whether members get permanent invite codes, and how many permanent codes are used."""
    return await _settings(call)


@routes.put("/api/admin/invite/settings", body=InviteSettingsIn, response=InviteSettingsOut, auth=ADMIN)
async def put_invite_settings(call: Call[InviteSettingsIn, None]) -> InviteSettingsOut:
    """Choose permanent or 30-day invite codes for members (codes already made are kept)."""
    await invites.set_permanent(call.merchant, call.body.permanent, actor=f"staff:{call.staff.id}")
    return await _settings(call)
