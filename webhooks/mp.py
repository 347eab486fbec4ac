"""Mini-program JSON API: login with a `wx.login` code, logout, and the member's own profile."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import Field

from handlers.core.errors import ErrorCode
from handlers.members import mp_login
from handlers.members.profile import mask_phone
from handlers.staff.merchants import SLUG, get_merchant
from handlers.staff.sessions import SessionKind
from handlers.wechat.client import mp_credentials
from handlers.wechat.errors import (
    CodeUsed,
    FrequencyLimited,
    InvalidCode,
    InvalidCredential,
    WeChatError,
    WeChatNotConfigured,
)
from models.member import Gender, Member
from webhooks.api import ApiError, Call, In, Line, Out, Routes
from webhooks.appkeys import EFFECTS, WECHAT
from webhooks.auth import MEMBER, bearer_token, rate_limit, session_store

LOGIN_ATTEMPTS = 30
LOGIN_WINDOW_SECONDS = 60
# What a member sees when WeChat refuses the login for a reason retrying cannot fix (the merchant's
# mini-program is not set up, or its appid/secret is wrong), and for any other refusal.
LOGIN_MISCONFIGURED = "本店小程序登录暂不可用，请联系商家"
LOGIN_FAILED = "微信登录暂时失败，请稍后再试"

log = logging.getLogger(__name__)

routes = Routes("mp")


class MerchantPath(In):
    merchant_slug: Annotated[str, Field(pattern=SLUG.pattern, examples=["demo"])]


class MpLoginIn(In):
    code: Annotated[Line, Field(min_length=1, max_length=128, description="the code from wx.login()")]
    scene: (
        Annotated[
            Line,
            Field(
                max_length=128,
                description="the launch scene (an invite code's `r=<member code>`): credits the referrer "
                "when this login creates the member",
                examples=["r=K7M2Q9XP"],
            ),
        ]
        | None
    ) = None


class MemberOut(Out):
    code: str = Field(description="member code shown at the till")
    name: str | None
    phone: str | None = Field(description="masked, e.g. 138****1234")
    birthday: date | None
    gender: Gender | None
    registered_at: datetime
    profile_complete: bool


class MpLoginOut(Out):
    token: str = Field(description="bearer token for the Authorization header")
    expires_in: int = Field(description="seconds until the token expires")
    member: MemberOut


class ProfilePatch(In):
    """Fields to set; omitted or null fields stay as they are. Values are parsed like the chat dialog's."""

    name: Annotated[Line, Field(min_length=1, max_length=64)] | None = None
    phone: Annotated[Line, Field(min_length=1, max_length=32, examples=["13800138000"])] | None = None
    birthday: Annotated[Line, Field(min_length=1, max_length=32, examples=["1990-05-20"])] | None = None
    gender: Annotated[Line, Field(min_length=1, max_length=16, examples=["male", "女"])] | None = None


def member_out(member: Member) -> MemberOut:
    return MemberOut(
        code=member.code,
        name=member.name,
        phone=mask_phone(member.phone) or None,
        birthday=member.birthday,
        gender=Gender(member.gender) if member.gender else None,
        registered_at=member.registered_at,
        profile_complete=mp_login.profile_complete(member),
    )


@routes.post(
    "/api/mp/{merchant_slug}/login",
    path_model=MerchantPath,
    body=MpLoginIn,
    response=MpLoginOut,
    errors=(401, 404, 429, 502),
)
async def login(call: Call[MpLoginIn, MerchantPath]) -> MpLoginOut:
    """Exchange a wx.login code for a member session (creating or linking the member)."""
    await rate_limit(
        call.request, "mp-login", call.path.merchant_slug, limit=LOGIN_ATTEMPTS, window=LOGIN_WINDOW_SECONDS
    )
    merchant = await get_merchant(call.path.merchant_slug)
    try:
        mp = await call.request.app[WECHAT].code2session(mp_credentials(merchant), call.body.code)
    except (InvalidCode, CodeUsed):
        raise ApiError(401, "invalid_login_code", "登录凭证无效或已使用，请重新登录", field="code") from None
    except FrequencyLimited:
        raise ApiError(
            429, ErrorCode.RATE_LIMITED, "登录过于频繁，请稍后再试", headers={"Retry-After": "60"}
        ) from None
    except WeChatNotConfigured:
        log.warning("mini-program login: the merchant has no mini-program", extra={"merchant": merchant.slug})
        raise ApiError(502, ErrorCode.WECHAT_ERROR, LOGIN_MISCONFIGURED) from None
    except WeChatError as exc:  # errcode and errmsg (with WeChat's rid) go to the log, not to the member
        log.warning(
            "mini-program login refused by wechat", extra={"merchant": merchant.slug, **exc.log_fields()}
        )
        message = LOGIN_MISCONFIGURED if isinstance(exc, InvalidCredential) else LOGIN_FAILED
        raise ApiError(502, ErrorCode.WECHAT_ERROR, message) from None
    member = await mp_login.link_member(
        merchant, mp.openid, mp.unionid, effects=call.request.app[EFFECTS], scene=call.body.scene or ""
    )
    issued = await session_store(call.request).issue(
        SessionKind.MEMBER, merchant.id, member.id, data={"openid": mp.openid, "session_key": mp.session_key}
    )
    return MpLoginOut(token=issued.token, expires_in=issued.expires_in, member=member_out(member))


@routes.post("/api/mp/{merchant_slug}/logout", path_model=MerchantPath, auth=MEMBER)
async def logout(call: Call[None, MerchantPath]) -> None:
    """Revoke the presented member token."""
    await session_store(call.request).revoke(bearer_token(call.request) or "")


@routes.get("/api/mp/{merchant_slug}/me", path_model=MerchantPath, response=MemberOut, auth=MEMBER)
async def me(call: Call[None, MerchantPath]) -> MemberOut:
    """The logged-in member's profile (phone masked)."""
    return member_out(call.member)


@routes.patch(
    "/api/mp/{merchant_slug}/me", path_model=MerchantPath, body=ProfilePatch, response=MemberOut, auth=MEMBER
)
async def update_me(call: Call[ProfilePatch, MerchantPath]) -> MemberOut:
    """Complete or update name, phone, birthday and gender (validated like the chat dialog)."""
    edit = mp_login.ProfileEdit(
        name=call.body.name, phone=call.body.phone, birthday=call.body.birthday, gender=call.body.gender
    )
    today = datetime.now(ZoneInfo(call.merchant.timezone)).date()
    member = await mp_login.update_profile(
        call.member, edit, today=today, now=datetime.now(UTC), effects=call.effects
    )
    return member_out(member)
