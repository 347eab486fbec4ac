"""Chat keyword 邀请 (invite, menu key MENU_INVITE): the member's own invite QR code, as an image.

The reply is a passive image message of the code's picture, uploaded as temporary media once and reused
(a reply that misses the webhook's deadline goes out as a customer-service image message). When the
upload fails the member gets a link to their invite page, which shows the same code. A follower the
bot does not know as a member, and a merchant without an Official Account, get a polite text.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply, ImageReply
from handlers.core.errors import ValidationError
from handlers.members import invites
from handlers.wechat.errors import WeChatError, WeChatNotConfigured
from models.invite import InviteCode

log = logging.getLogger(__name__)


async def invite(turn: Turn) -> ChatReply:
    member = await turn.member()
    if member is None or member.anonymized_at is not None:
        return await turn.reply("invite_unavailable", reason="not_member")
    wechat, now = turn.services.wechat, turn.now()
    if wechat is None:
        return await turn.reply("invite_unavailable", reason="no_account")
    try:
        code = await invites.member_code(wechat, turn.merchant, member, now=now)
    except WeChatNotConfigured:
        return await turn.reply("invite_unavailable", reason="no_account")
    except WeChatError as exc:
        log.warning("invite code not made", extra={"merchant": turn.merchant.slug, **exc.log_fields()})
        return await turn.reply("invite_unavailable", reason="failed")
    try:
        return ImageReply(await invites.image_media(wechat, turn.merchant, code, now=now))
    except (WeChatError, ValidationError) as exc:
        log.warning("invite picture not uploaded: %s", exc, extra={"merchant": turn.merchant.slug})
    token = invites.page_token(turn.services.secret, turn.merchant.id, member.id, now=now)
    url = invites.page_url(turn.services.base_url, turn.merchant.slug, token)
    return await turn.reply("invite_link", url=url, expires=_expires(code, turn.merchant.timezone))


def _expires(code: InviteCode, timezone: str) -> str:
    return code.expires_at.astimezone(ZoneInfo(timezone)).date().isoformat() if code.expires_at else ""


def add_invite_intents(router: Router) -> None:
    router.add_intent(
        "invite", invite, keywords=("邀请", "invite", "邀请好友", "推荐"), menu_keys=("MENU_INVITE",)
    )
