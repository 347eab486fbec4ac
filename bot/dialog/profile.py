"""The profile-completion dialog: phone → birthday → gender, skipping what the member already has.

State (Redis, see state.py): `{"flow": "profile", "step": <field>, "data": {<field>: <answer>}}`.
Answers are kept in the state and written together on completion. An invalid answer is re-asked
with the validation message and leaves the state as it was.
"""

from __future__ import annotations

from datetime import date

from bot.dialog.state import DialogState
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply
from handlers.core.errors import ValidationError
from handlers.members import registration
from handlers.members.profile import parse_birthday, parse_gender, parse_phone
from models.member import Gender, Member

FLOW = "profile"
STEPS = ("phone", "birthday", "gender")


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
    if member is None or state.step not in STEPS:
        await turn.clear_state()  # the member left meanwhile, or the state is from an older release
        return await turn.reply("help", in_dialog=False)
    try:
        value = _parse(turn, state.step, turn.text)
    except ValidationError as exc:
        return await turn.reply("invalid_answer", reason=exc.message, step=state.step)
    return await _next(turn, member, state.advance(state.step, **{state.step: value}))


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
