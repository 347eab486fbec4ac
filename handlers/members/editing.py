"""The merchant's staff edit a member's profile: the member's own validation, and an audit row.

Fields are parsed by `mp_login.parse_edit` — the very rules of the member's own profile and the chat
dialog — so a bad value is the same 400 naming its field, and nothing is written. What changed is
audit-logged (`member.profile`) with its values before and after, the phone masked. Filling the last
missing field completes the profile as the member's own edit would (once, with its bonus).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.tasks import Effects
from handlers.members import lookup as members
from handlers.members import mp_login
from handlers.members.mp_login import ProfileEdit
from handlers.members.profile import mask_phone
from models.member import Member
from models.merchant import Merchant


def _logged(name: str, value: Any) -> Any:
    """A profile value as the audit log keeps it (a phone masked, dates and enums as text)."""
    if value is None:
        return None
    if name == "phone":
        return mask_phone(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


async def edit_profile(
    merchant: Merchant,
    member_id: int,
    edit: ProfileEdit,
    *,
    actor: str,
    today: date,
    now: datetime,
    effects: Effects,
) -> Member:
    """Validate every given field, then write the ones that differ with one audit row; an edit that
    changes nothing writes nothing."""
    values = mp_login.parse_edit(edit, today=today)
    async with in_transaction():
        found = await members.resolve(merchant, member_id=member_id)
        member = await Member.select_for_update().get(id=found.id)
        changed = {name: value for name, value in values.items() if getattr(member, name) != value}
        if changed:
            before = {name: _logged(name, getattr(member, name)) for name in changed}
            await Member.filter(id=member.id).update(**changed)
            for name, value in changed.items():
                setattr(member, name, value)
            await audit_log.record(
                merchant.id,
                actor,
                "member.profile",
                f"member:{member.id}",
                code=member.code,
                before=before,
                after={name: _logged(name, value) for name, value in changed.items()},
            )
    await mp_login.complete_if_filled(member, now=now, effects=effects)
    return member
