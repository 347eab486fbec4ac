"""Chat for campaigns: the SMS opt-out keyword TD (回复TD退订) and WeChat's `MASSSENDJOBFINISH` report."""

from __future__ import annotations

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.campaigns import consent
from handlers.core.chat import ChatReply


async def unsubscribe_sms(turn: Turn) -> ChatReply:
    """TD / 退订: the member's SMS consent is withdrawn (audited); no campaign SMS reaches them again."""
    member = await turn.member()
    if member is not None:
        await consent.withdraw(member, via="chat:TD", now=turn.now())
    return await turn.reply("sms_unsubscribed")


async def mass_job_finished(turn: Turn) -> ChatReply | None:
    """`MASSSENDJOBFINISH`: `MsgID`, `Status`, `TotalCount`, `SentCount`, `ErrorCount`; no reply."""
    raw = turn.message.raw
    msg_id = str(raw.get("MsgID") or raw.get("MsgId") or "")
    if msg_id:
        await consent.mass_job_finished(
            turn.merchant.id,
            msg_id,
            status=str(raw.get("Status") or ""),
            total=_int(raw.get("TotalCount")),
            sent=_int(raw.get("SentCount")),
            errors=_int(raw.get("ErrorCount")),
            now=turn.now(),
        )
    return None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def add_campaign_intents(router: Router) -> None:
    router.add_intent("sms_unsubscribe", unsubscribe_sms, keywords=("退订", "TD", "退订短信"))
    router.add_event("masssendjobfinish", mass_job_finished)
