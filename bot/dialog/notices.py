"""WeChat's reports on what it did with memberbot's messages: no reply, the delivery record updated."""

from __future__ import annotations

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply
from handlers.notices import delivery


async def template_job_finished(turn: Turn) -> ChatReply | None:
    """`TEMPLATESENDJOBFINISH`: `MsgID` and `Status` (`success`, `failed:user block`, …)."""
    raw = turn.message.raw
    msgid, status = str(raw.get("MsgID") or raw.get("MsgId") or ""), str(raw.get("Status") or "")
    if msgid:
        await delivery.job_finished(turn.merchant.id, msgid, status)
    return None


def add_notice_events(router: Router) -> None:
    router.add_event("templatesendjobfinish", template_job_finished)
