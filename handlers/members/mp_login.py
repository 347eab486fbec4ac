"""Mini-program members: link a `jscode2session` identity to a member, and let members edit their profile.

Linking, in order: the member already holding this mini-program openid; else the member of the same
merchant with the same unionid (e.g. who followed the Official Account first) gains the openid, so one
person stays one member; else a new member is created. Only a creation records who brought the member
in, from the scene the mini-program was opened with (an invite code's `r=<member code>`, or the
Official Account forms `ref_<member code>` / `staff_<id>`), under the follow's rules
(`registration.resolve_scene`): a later login never gains or changes a referrer.

Every step is safe under concurrent logins of the same user: attaching is a conditional update and
creation goes through the unique (merchant, mp_openid) key, so the loser of a race re-reads the
winner's member.

Profile edits use the chat dialog's parsers (`handlers.members.profile`), and completion goes through
`handlers.registration.complete_profile`, which sets `profile_completed_at` once and queues the
profile-completion effect (its bonus).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote

from tortoise.exceptions import IntegrityError

from handlers.core.tasks import Effects
from handlers.members import lookup as members
from handlers.members import registration
from handlers.members.profile import parse_birthday, parse_gender, parse_name, parse_phone
from models.member import Member, MemberSource
from models.merchant import Merchant

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProfileEdit:
    """Raw values as the member typed them; None leaves a field unchanged."""

    name: str | None = None
    phone: str | None = None
    birthday: str | None = None
    gender: str | None = None


def profile_complete(member: Member) -> bool:
    return member.profile_completed_at is not None


async def link_member(
    merchant: Merchant, openid: str, unionid: str | None, *, effects: Effects, scene: str = ""
) -> Member:
    """The member this mini-program user is, creating it on first login (attributed to `scene`)."""
    member = await Member.get_or_none(merchant_id=merchant.id, mp_openid=openid)
    if member is not None and member.anonymized_at is not None:
        await Member.filter(id=member.id, mp_openid=openid).update(mp_openid=None)
        member = None
    if member is not None:
        if unionid and not member.unionid:
            try:
                await Member.filter(id=member.id, unionid=None).update(unionid=unionid)
            except IntegrityError:  # another member already is this person (two identities, kept apart)
                log.warning("unionid already linked to another member", extra={"member": member.id})
            else:
                member.unionid = unionid
        return member
    if unionid:
        linked = await _attach_by_unionid(merchant, openid, unionid)
        if linked is not None:
            return linked
    # The mini-program passes its launch scene URL-encoded or decoded: both read the same.
    attribution = await registration.resolve_scene(merchant, unquote(scene)) if scene else None
    defaults: dict[str, Any] = {
        "unionid": unionid,
        "source": MemberSource.MINI_PROGRAM,
        "subscribed": False,
        "referrer": attribution.referrer if attribution else None,
        "acquired_by": attribution.staff if attribution else None,
        "store_id": attribution.store_id if attribution else None,
    }
    try:
        member, created = await members.get_or_create(merchant, {"mp_openid": openid}, defaults)
    except IntegrityError:  # the same person's follow created its member meanwhile: join it
        linked = await _attach_by_unionid(merchant, openid, unionid) if unionid else None
        if linked is not None:
            return linked
        # The unionid's member has another mini-program openid: keep the two apart.
        log.warning("unionid already linked to another member", extra={"merchant": merchant.slug})
        defaults["unionid"] = None
        member, created = await members.get_or_create(merchant, {"mp_openid": openid}, defaults)
    if created:
        await registration.registered(member, effects)  # registration bonus, new-member gifts, …
    return member


async def _attach_by_unionid(merchant: Merchant, openid: str, unionid: str) -> Member | None:
    candidate = (
        await Member.filter(merchant_id=merchant.id, unionid=unionid, mp_openid=None, anonymized_at=None)
        .order_by("id")
        .first()
    )
    if candidate is None:
        return None
    try:
        attached = await Member.filter(id=candidate.id, mp_openid=None).update(mp_openid=openid)
    except IntegrityError:
        attached = 0  # a concurrent login created or attached this openid first: that member wins
    if not attached:
        return await Member.get_or_none(merchant_id=merchant.id, mp_openid=openid)
    candidate.mp_openid = openid
    return candidate


def parse_edit(edit: ProfileEdit, *, today: date) -> dict[str, Any]:
    """The given fields, parsed by the chat dialog's rules; the first invalid one raises, naming it.

    The one validation of a profile edit: the member's own (here) and the merchant's staff
    (`handlers.members.editing`) both use it."""
    values: dict[str, Any] = {}
    if edit.name is not None:
        values["name"] = parse_name(edit.name)
    if edit.phone is not None:
        values["phone"] = parse_phone(edit.phone)
    if edit.birthday is not None:
        values["birthday"] = parse_birthday(edit.birthday, today=today)
    if edit.gender is not None:
        values["gender"] = parse_gender(edit.gender)
    return values


async def complete_if_filled(member: Member, *, now: datetime, effects: Effects) -> None:
    """Complete the profile (once, with its bonus) when phone, birthday and gender are all known."""
    if member.profile_completed_at is None and None not in (member.phone, member.birthday, member.gender):
        await registration.complete_profile(member, now=now, effects=effects)


async def update_profile(
    member: Member, edit: ProfileEdit, *, today: date, now: datetime, effects: Effects
) -> Member:
    """Validate every given field first (nothing is written if one is invalid), then save them."""
    values = parse_edit(edit, today=today)
    if values:
        await Member.filter(id=member.id).update(**values)
        for name, value in values.items():
            setattr(member, name, value)
    await complete_if_filled(member, now=now, effects=effects)
    return member
