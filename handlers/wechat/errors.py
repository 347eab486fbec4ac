"""Typed WeChat API errors: one class per errcode family, looked up in a registry with a fallback.

Every error is a `DomainError` with `code=ErrorCode.WECHAT_ERROR` (HTTP 502), except `WeChatRequestInvalid`,
which is raised *before* calling WeChat when the request breaks WeChat's published rules (HTTP 400).

The `message` a caller sees is the class's own Simplified Chinese `user_message`: WeChat's errmsg (English,
with a request id) and the errcode are kept on the exception for the log (`log_fields`, `str()`) only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from handlers.core.errors import DomainError, ErrorCode, ValidationError

MAX_LOGGED_ERRMSG = 200


class WeChatError(DomainError):
    """WeChat answered with a non-zero errcode. `errmsg` is WeChat's own text (it carries a request id)."""

    code = ErrorCode.WECHAT_ERROR
    errcodes: tuple[int, ...] = ()
    user_message: ClassVar[str] = "微信接口调用失败，请稍后再试"

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(self.user_message)
        self.errcode = errcode
        self.errmsg = errmsg

    def __str__(self) -> str:  # what tracebacks and the task outbox record: the errcode and errmsg too
        detail = f"errcode {self.errcode}: {self.errmsg}" if self.errmsg else f"errcode {self.errcode}"
        return f"{self.message} ({detail})"

    def log_fields(self) -> dict[str, Any]:
        """The `extra` of a log record about this refusal."""
        return {
            "error": type(self).__name__,
            "errcode": self.errcode,
            "errmsg": self.errmsg[:MAX_LOGGED_ERRMSG],
        }


class WeChatUnavailable(WeChatError):
    """Network failure, timeout, HTTP 5xx, an unreadable answer, or errcode -1 (system busy): retry later."""

    errcodes = (-1,)
    user_message = "微信服务暂时不可用，请稍后再试"


class InvalidCredential(WeChatError):
    """The appid or secret is wrong (40013 invalid appid, 40125 invalid appsecret, 40164 IP not allowed)."""

    errcodes = (40013, 40125, 40164)
    user_message = "商户的微信 AppID 或 AppSecret 配置有误，请联系商家"


class InvalidAccessToken(WeChatError):
    """The access token is invalid or expired (40001, 40014, 42001); the client re-fetches once by itself."""

    errcodes = (40001, 40014, 42001)
    user_message = "微信接口调用凭证无效，请稍后再试"


class InvalidOpenid(WeChatError):
    errcodes = (40003,)
    user_message = "微信用户标识无效"


class RequireSubscribe(WeChatError):
    """The user does not follow the Official Account (43004)."""

    errcodes = (43004,)
    user_message = "用户未关注公众号，无法发送消息"


class SubscribeRefused(WeChatError):
    """No remaining subscribe-message grant: the user refused or already used it (43101)."""

    errcodes = (43101,)
    user_message = "用户未授权接收该订阅消息"


class OutOfResponseWindow(WeChatError):
    """Outside the 48-hour customer-service window (45015) or over its message quota (45047)."""

    errcodes = (45015, 45047)
    user_message = "已超过 48 小时客服消息时限，无法发送"


class FrequencyLimited(WeChatError):
    """Too many calls (45009 API limit, 45011 per-user limit, 43117 per-openid throttle)."""

    errcodes = (45009, 45011, 43117)
    user_message = "调用微信接口过于频繁，请稍后再试"


class InvalidCode(WeChatError):
    """Unknown or expired mini-program login code (40029)."""

    errcodes = (40029,)
    user_message = "登录凭证无效或已过期，请重新登录"


class CodeUsed(WeChatError):
    """The mini-program login code was already exchanged (40163)."""

    errcodes = (40163,)
    user_message = "登录凭证已使用，请重新登录"


class InvalidTemplate(WeChatError):
    errcodes = (40037,)
    user_message = "消息模板无效，请检查模板 ID"


class DuplicateClientMsgId(WeChatError):
    """The anti-replay id was already used (45065). `msgid`: the original message, if given."""

    errcodes = (45065,)
    user_message = "该消息已经发送过"

    def __init__(self, errcode: int, errmsg: str = "", msgid: int | None = None) -> None:
        super().__init__(errcode, errmsg)
        self.msgid = msgid


class InvalidArgument(WeChatError):
    """WeChat rejected the payload (47001 format, 47003 argument, 40169 scene, 41030 page, 40053 QR;
    media: 40004 type, 40005 file type, 40006 size, 40007 media_id, 41005 no file)."""

    # … and 45067 (clientmsgid over 64 bytes), 40130 (a mass-send openid list outside 2–10,000).
    errcodes = (
        47001,
        47003,
        40169,
        41030,
        40053,
        40008,
        45008,
        40004,
        40005,
        40006,
        40007,
        41005,
        45067,
        40130,
    )
    user_message = "微信拒绝了请求参数"


class NoMassQuota(WeChatError):
    """The account has no mass-send quota left (45028; e.g. a subscription account's one a day)."""

    errcodes = (45028,)
    user_message = "公众号群发次数已用完"


class QrCodeLimitReached(WeChatError):
    """The account has made all the permanent QR codes it may (100,000; 45029)."""

    errcodes = (45029,)
    user_message = "公众号永久二维码数量已达上限"


# WeChat's menu refusals (400xx), as what the merchant should change.
MENU_REFUSALS: dict[int, str] = {
    40015: "微信拒绝了菜单：菜单类型不正确",
    40016: "微信拒绝了菜单：按钮个数不符合要求（一级 1–3 个，子菜单 1–5 个）",
    40017: "微信拒绝了菜单：按钮类型不正确",
    40018: "微信拒绝了菜单：按钮名称过长",
    40019: "微信拒绝了菜单：按钮 key 过长",
    40020: "微信拒绝了菜单：按钮网址过长",
    40022: "微信拒绝了菜单：子菜单级数不正确",
    40023: "微信拒绝了菜单：子菜单按钮个数不符合要求",
    40024: "微信拒绝了菜单：子菜单按钮类型不正确",
    40025: "微信拒绝了菜单：子菜单按钮名称过长",
    40026: "微信拒绝了菜单：子菜单按钮 key 过长",
    40027: "微信拒绝了菜单：子菜单按钮网址过长",
    40054: "微信拒绝了菜单：子菜单按钮网址无效（须为完整网址，域名须为公众号可用的域名）",
    40055: "微信拒绝了菜单：按钮网址无效（须为完整网址，域名须为公众号可用的域名）",
}


class InvalidMenu(WeChatError):
    """WeChat refused a menu definition (its 400xx menu codes): the merchant's input, so HTTP 400."""

    code = ErrorCode.VALIDATION
    errcodes = tuple(MENU_REFUSALS)
    user_message = "微信拒绝了菜单定义"

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(errcode, errmsg)
        self.message = MENU_REFUSALS.get(errcode, self.user_message)
        self.args = (self.message,)
        self.field = "button"


class NoMenu(WeChatError):
    """The Official Account has no custom menu (46003, from `menu/get`)."""

    errcodes = (46003,)
    user_message = "公众号尚未设置自定义菜单"


class TagNameExists(WeChatError):
    """The account already has a user tag of that name (45157)."""

    errcodes = (45157,)
    user_message = "公众号已有同名的用户标签"


class TooManyTags(WeChatError):
    """The account holds WeChat's maximum of 100 user tags (45056)."""

    errcodes = (45056,)
    user_message = "公众号用户标签已达 100 个上限，请先在公众号后台删除不用的标签"


class UserHasTooManyTags(WeChatError):
    """A follower in the batch already holds 20 tags, WeChat's maximum per user (45059)."""

    errcodes = (45059,)
    user_message = "有粉丝的标签已达 20 个上限"


class InvalidTag(WeChatError):
    """The tag does not exist (45159), is one of WeChat's own (45058), or its name is too long (45158)."""

    errcodes = (45159, 45058, 45158)
    user_message = "公众号用户标签无效或已被删除"


class InvalidOpenidList(WeChatError):
    """A batch named no openid or more than 50 (40032)."""

    errcodes = (40032,)
    user_message = "粉丝列表数量无效（每次 1–50 个）"


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
        QrCodeLimitReached,
        NoMassQuota,
        InvalidMenu,
        NoMenu,
        TagNameExists,
        TooManyTags,
        UserHasTooManyTags,
        InvalidTag,
        InvalidOpenidList,
    )
    for errcode in cls.errcodes
}


def error_for(errcode: int, errmsg: str = "") -> WeChatError:
    """The typed error for a WeChat errcode; unknown codes fall back to the `WeChatError` base."""
    return _REGISTRY.get(errcode, WeChatError)(errcode, errmsg)
