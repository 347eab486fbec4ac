"""The profile-completion dialog: phone → birthday → gender, skipping what the member already has.

A phone that an imported member without WeChat identity has (`handlers.members.phone_link`) is proved
first: a one-time code goes to it by SMS and the `phone_code` step asks for it; the right code links
this follower to that member (the dialog goes on as them), 跳过 goes on as a new member.

State (Redis, see state.py): `{"flow": "profile", "step": <field>, "data": {<field>: <answer>}}`.
Answers are kept in the state and written together on completion. An invalid answer is re-asked
with the validation message and leaves the state as it was.
"""

from __future__ import annotations

from datetime import date

from bot.dialog.state import DialogState
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply, TextReply
from handlers.core.errors import ValidationError
from handlers.members import phone_link, registration
from handlers.members.profile import mask_phone, parse_birthday, parse_gender, parse_phone
from models.member import Gender, Member

FLOW = "profile"
STEPS = ("phone", "birthday", "gender")
LINK_STEP = "phone_code"
SKIP = "跳过"


def missing_steps(member: Member, answers: dict[str, str]) -> list[str]:
    return [step for step in STEPS if getattr(member, step) is None and step not in answers]


async def start(turn: Turn, member: Member) -> ChatReply:
    """Begin (or resume) profile completion for `member`."""
    if member.profile_completed_at is not None:
        return await turn.reply("already_registered", code=member.code)
    answers = turn.state.data if turn.state is not None and turn.state.flow == FLOW else {}
    return await _next(turn, member, DialogState(FLOW, "", answers))


async def answer(turn: Turn, state: DialogState) -> ChatReply:
    """Handle the member's answer to the step being asked."""
    member = await turn.member()
    if member is None or state.step not in (*STEPS, LINK_STEP):
        await turn.clear_state()  # the member left meanwhile, or the state is from an older release
        return await turn.reply("help", in_dialog=False)
    if state.step == LINK_STEP:
        return await _prove(turn, member, state)
    try:
        value = _parse(turn, state.step, turn.text)
    except ValidationError as exc:
        return await turn.reply("invalid_answer", reason=exc.message, step=state.step)
    if state.step == "phone" and (offer := await _offer_link(turn, member, state, value)) is not None:
        return offer
    return await _next(turn, member, state.advance(state.step, **{state.step: value}))


async def _offer_link(turn: Turn, member: Member, state: DialogState, phone: str) -> ChatReply | None:
    """Send the code when an imported member has this phone; None: nothing to link (or no way to prove
    it now), the dialog goes on as before."""
    codes = turn.services.phone_codes
    if codes is None or await phone_link.candidate(turn.merchant, member, phone) is None:
        return None
    sent = await codes.send(turn.merchant, member, phone, secret=turn.services.secret)
    if sent in (phone_link.SendResult.FAILED, phone_link.SendResult.BUSY):
        return None
    await turn.save_state(state.advance(LINK_STEP, phone=phone))
    return await turn.reply("ask_phone_code", phone=mask_phone(phone))


async def _prove(turn: Turn, member: Member, state: DialogState) -> ChatReply:
    codes = turn.services.phone_codes
    phone = state.data.get("phone", "")
    if codes is None or turn.text.strip() == SKIP:
        return await _next(turn, member, state)
    if not await codes.check(turn.merchant, member, phone, turn.text, secret=turn.services.secret):
        return await turn.reply("phone_code_wrong")
    imported = await phone_link.candidate(turn.merchant, member, phone, linked_too=True)
    found = (
        await phone_link.link(turn.merchant, member, imported, phone, now=turn.now())
        if imported is not None
        else phone_link.Link(phone_link.Outcome.NONE)
    )
    if found.outcome is phone_link.Outcome.LINKED and found.member is not None:
        then = await _next(turn, found.member, state)
        return await turn.reply("phone_linked", code=found.member.code, then=_text(then))
    then = await _next(turn, member, state)
    return await turn.reply("phone_not_linked", outcome=found.outcome.value, then=_text(then))


def _text(reply: ChatReply) -> str:
    return reply.text if isinstance(reply, TextReply) else ""


async def _next(turn: Turn, member: Member, state: DialogState) -> ChatReply:
    missing = missing_steps(member, state.data)
    if missing:
        await turn.save_state(state.advance(missing[0]))
        return await turn.reply(f"ask_{missing[0]}")
    data = state.data
    await registration.complete_profile(
        member,
        now=turn.now(),
        effects=turn.services.effects,
        phone=data.get("phone"),
        birthday=date.fromisoformat(data["birthday"]) if "birthday" in data else None,
        gender=Gender(data["gender"]) if "gender" in data else None,
    )
    await turn.clear_state()
    return await turn.reply("profile_done", code=member.code)


def _parse(turn: Turn, step: str, text: str) -> str:
    if step == "phone":
        return parse_phone(text)
    if step == "birthday":
        return parse_birthday(text, today=turn.today()).isoformat()
    return parse_gender(text).value
