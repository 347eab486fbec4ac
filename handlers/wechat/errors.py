"""Typed WeChat API errors: one class per errcode family, looked up in a registry with a fallback.

Every error is a `DomainError` with `code=ErrorCode.WECHAT_ERROR` (HTTP 502), except `WeChatRequestInvalid`,
which is raised *before* calling WeChat when the request breaks WeChat's published rules (HTTP 400).
"""

from __future__ import annotations

from handlers.core.errors import DomainError, ErrorCode, ValidationError


class WeChatError(DomainError):
    """WeChat answered with a non-zero errcode. `errmsg` is WeChat's own text (it carries a request id)."""

    code = ErrorCode.WECHAT_ERROR
    errcodes: tuple[int, ...] = ()

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"WeChat API error {errcode}: {errmsg}" if errmsg else f"WeChat API error {errcode}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatUnavailable(WeChatError):
    """Network failure, timeout, HTTP 5xx, an unreadable answer, or errcode -1 (system busy): retry later."""

    errcodes = (-1,)


class InvalidCredential(WeChatError):
    """The appid or secret is wrong (40013 invalid appid, 40125 invalid appsecret, 40164 IP not allowed)."""

    errcodes = (40013, 40125, 40164)


class InvalidAccessToken(WeChatError):
    """The access token is invalid or expired (40001, 40014, 42001); the client re-fetches once by itself."""

    errcodes = (40001, 40014, 42001)


class InvalidOpenid(WeChatError):
    errcodes = (40003,)


class RequireSubscribe(WeChatError):
    """The user does not follow the Official Account (43004)."""

    errcodes = (43004,)


class SubscribeRefused(WeChatError):
    """No remaining subscribe-message grant: the user refused or already used it (43101)."""

    errcodes = (43101,)


class OutOfResponseWindow(WeChatError):
    """Outside the 48-hour customer-service window or over its quota (45015)."""

    errcodes = (45015,)


class FrequencyLimited(WeChatError):
    """Too many calls (45009 API limit, 45011 per-user limit, 43117 per-openid throttle)."""

    errcodes = (45009, 45011, 43117)


class InvalidCode(WeChatError):
    """Unknown or expired mini-program login code (40029)."""

    errcodes = (40029,)


class CodeUsed(WeChatError):
    """The mini-program login code was already exchanged (40163)."""

    errcodes = (40163,)


class InvalidTemplate(WeChatError):
    errcodes = (40037,)


class DuplicateClientMsgId(WeChatError):
    """The anti-replay id was already used (45065). `msgid`: the original message, if given."""

    errcodes = (45065,)

    def __init__(self, errcode: int, errmsg: str = "", msgid: int | None = None) -> None:
        super().__init__(errcode, errmsg)
        self.msgid = msgid


class InvalidArgument(WeChatError):
    """WeChat rejected the payload (47001 format, 47003 argument, 40169 scene, 41030 page, 40053 QR)."""

    errcodes = (47001, 47003, 40169, 41030, 40053, 40008, 45008)


class WeChatNotConfigured(DomainError):
    """The merchant has no appid/secret for the account the call needs."""

    code = ErrorCode.WECHAT_ERROR


class WeChatRequestInvalid(ValidationError):
    """The request breaks a WeChat rule the client checks before sending (nothing was sent)."""


_REGISTRY: dict[int, type[WeChatError]] = {
    errcode: cls
    for cls in (
        WeChatUnavailable,
        InvalidCredential,
        InvalidAccessToken,
        InvalidOpenid,
        RequireSubscribe,
        SubscribeRefused,
        OutOfResponseWindow,
        FrequencyLimited,
        InvalidCode,
        CodeUsed,
        InvalidTemplate,
        DuplicateClientMsgId,
        InvalidArgument,
    )
    for errcode in cls.errcodes
}


def error_for(errcode: int, errmsg: str = "") -> WeChatError:
    """The typed error for a WeChat errcode; unknown codes fall back to the `WeChatError` base."""
    return _REGISTRY.get(errcode, WeChatError)(errcode, errmsg)
