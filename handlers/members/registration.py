"""Following, unfollowing and profile completion of Official Account members.

- `subscribe` finds or creates the member keyed by (merchant, openid), safe under WeChat's duplicate
  deliveries. A returning follower whose openid was detached on unfollowing is relinked through the
  keyed `openid_digest`, as long as the member was not anonymised yet.
- Scenes: `ref_<member code>` records the referrer (an existing, non-anonymised member of the same
  merchant, not the member itself), `staff_<staff id>` the acquiring staff (same merchant, active)
  and their store as the member's acquiring store; `r=<member code>` is the referrer's mini-program
  code (`handlers.members.invites`), which the mini-program login passes on
  (`handlers.members.mp_login`) under the same rules.
  Attribution is recorded only when the subscribe creates the member: a returning follower, a member
  known from the mini-program, or a SCAN by a follower never gains or changes a referrer (so referral
  chains follow registration order and cannot cycle). `source` is likewise set on creation only.
  Unknown or malformed scenes are ignored.
- `unsubscribe` detaches the OA identity at once; erasing the profile later is `handlers.members.retention`'s
  job (the policy is in that module and in docs/retention.md).

What follows is a durable effect (`handlers.effects`): a member's creation queues `member.registered`
in its transaction (`members.create_member`; not on relink or re-follow), the profile's first
completion queues `member.profile_completed` in its own. Both run right after commit, through the
`Effects` the caller passes; a failure never undoes the registration and is retried.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core.errors import ValidationError
from handlers.core.tasks import Effects
from handlers.members import lookup as members
from models.member import Gender, Member, MemberSource
from models.merchant import Merchant
from models.staff import Staff

log = logging.getLogger(__name__)

PROFILE_COMPLETED = "member.profile_completed"

SCENE_PREFIX = "qrscene_"
_REF = re.compile(r"^(?:ref_|r=)([0-9A-Za-z-]{4,20})$")
_STAFF = re.compile(r"^staff_([1-9][0-9]{0,9})$")


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who brought a follower in, as named by a QR scene (at most one of the two is set)."""

    referrer: Member | None = None
    staff: Staff | None = None

    @property
    def store_id(self) -> int | None:
        """The acquiring store: the acquiring staff's, when a staff QR brought the member in."""
        return self.staff.store_id if self.staff is not None else None

    @property
    def source(self) -> MemberSource:
        if self.referrer is not None:
            return MemberSource.OA_REFERRAL
        if self.staff is not None:
            return MemberSource.OA_STAFF
        return MemberSource.OA_SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Subscription:
    member: Member
    created: bool  # a new member
    restored: bool  # a detached member relinked on re-following


async def resolve_scene(merchant: Merchant, scene: str) -> Attribution:
    """The referrer or staff a scene names, if valid for this merchant; otherwise nobody."""
    scene = scene.strip().removeprefix(SCENE_PREFIX)
    if match := _REF.match(scene):
        referrer = await Member.get_or_none(
            merchant_id=merchant.id, code=members.normalise_code(match[1]), anonymized_at=None
        )
        return Attribution(referrer=referrer)
    if match := _STAFF.match(scene):
        staff = await Staff.get_or_none(merchant_id=merchant.id, id=int(match[1]), active=True)
        return Attribution(staff=staff)
    return Attribution()


async def subscribe(
    merchant: Merchant,
    openid: str,
    scene: str,
    *,
    secret: bytes,
    effects: Effects,
    unionid: str | None = None,
) -> Subscription:
    """Follow (or message from an unknown follower): find, relink or create the member; mark subscribed.

    `unionid` (from WeChat's user/info, when the account is bound to an Open Platform account) links a
    new follower to the member the same person already is through the mini-program, instead of
    creating a second member (and a second registration bonus).
    """
    digest = members.openid_digest(secret, merchant.id, openid)
    attribution = await resolve_scene(merchant, scene)
    member = await members.by_openid(merchant, openid)
    restored = False
    if member is None:
        member = await _relink(merchant, openid, digest)
        restored = member is not None
    if member is None and unionid:
        member = await _attach_by_unionid(merchant, openid, digest, unionid)
    if member is None:
        defaults = {
            "openid_digest": digest,
            "subscribed": True,
            "source": attribution.source,
            "unionid": unionid,
            "referrer": attribution.referrer,
            "acquired_by": attribution.staff,
            "store_id": attribution.store_id,
        }
        try:
            member, created = await members.get_or_create(merchant, {"openid": openid}, defaults)
        except IntegrityError:  # the same person's mini-program login created its member meanwhile
            member = await _attach_by_unionid(merchant, openid, digest, unionid) if unionid else None
            created = False
            if member is None:  # the unionid's member has another openid: keep the two apart
                log.warning("unionid already linked to another member", extra={"merchant": merchant.slug})
                member, created = await members.get_or_create(
                    merchant, {"openid": openid}, {**defaults, "unionid": None}
                )
        if created:
            await registered(member, effects)
            return Subscription(member, created=True, restored=False)
    await _mark_subscribed(member, digest)
    return Subscription(member, created=False, restored=restored)


async def scan(merchant: Merchant, openid: str, *, secret: bytes, effects: Effects) -> Subscription:
    """SCAN of a parametric QR by a follower: never changes attribution, only ensures the member."""
    return await subscribe(merchant, openid, "", secret=secret, effects=effects)


async def unsubscribe(merchant: Merchant, openid: str, *, secret: bytes, now: datetime) -> Member | None:
    """Detach the OA identity at once (openid → NULL); the keyed digest stays for the grace period."""
    member = await members.by_openid(merchant, openid)
    if member is None:
        return None
    values = {
        "openid": None,
        "subscribed": False,
        "unsubscribed_at": now,
        "openid_digest": members.openid_digest(secret, merchant.id, openid),
    }
    if not await Member.filter(id=member.id, openid=openid).update(**values):
        return None  # a concurrent duplicate delivery detached it first
    for name, value in values.items():
        setattr(member, name, value)
    return member


async def complete_profile(
    member: Member,
    *,
    now: datetime,
    effects: Effects,
    phone: str | None = None,
    birthday: date | None = None,
    gender: Gender | None = None,
) -> bool:
    """Write validated profile fields; the first time all are present, set `profile_completed_at`.

    Returns True when this call completed the profile (and ran `on_profile_completed`).
    """
    given = {"phone": phone, "birthday": birthday, "gender": gender}
    values = {name: value for name, value in given.items() if value is not None}
    merged = {"phone": member.phone, "birthday": member.birthday, "gender": member.gender, **values}
    if any(value is None for value in merged.values()):
        raise ValidationError("资料尚未填写完整", field=next(k for k, v in merged.items() if v is None))
    async with in_transaction():
        if values:
            await Member.filter(id=member.id).update(**values)
        completed = await Member.filter(id=member.id, profile_completed_at=None).update(
            profile_completed_at=now
        )
        if completed:
            queued = await effects.queue(
                PROFILE_COMPLETED,
                f"member:{member.id}",
                {"member_id": member.id},
                merchant_id=member.merchant_id,
            )
    for name, value in values.items():
        setattr(member, name, value)
    if completed:
        member.profile_completed_at = now
        await effects.after_commit(queued)
    return bool(completed)


async def _relink(merchant: Merchant, openid: str, digest: str) -> Member | None:
    """Give a detached, not yet anonymised member its openid back (this cancels the pending erasure)."""
    candidate = (
        await Member.filter(merchant_id=merchant.id, openid_digest=digest, openid=None, anonymized_at=None)
        .order_by("-id")
        .first()
    )
    if candidate is None:
        return None
    try:
        updated = await Member.filter(id=candidate.id, openid=None, anonymized_at=None).update(
            openid=openid, subscribed=True, unsubscribed_at=None
        )
    except IntegrityError:
        updated = 0  # the openid was attached to a member meanwhile: that one wins
    if not updated:
        return await members.by_openid(merchant, openid)
    candidate.openid, candidate.subscribed, candidate.unsubscribed_at = openid, True, None
    return candidate


async def _mark_subscribed(member: Member, digest: str) -> None:
    if member.subscribed and member.unsubscribed_at is None and member.openid_digest == digest:
        return
    await Member.filter(id=member.id).update(subscribed=True, unsubscribed_at=None, openid_digest=digest)
    member.subscribed, member.unsubscribed_at, member.openid_digest = True, None, digest


async def _attach_by_unionid(merchant: Merchant, openid: str, digest: str, unionid: str) -> Member | None:
    """The mini-program member with this unionid and no Official Account identity, now given it."""
    candidate = (
        await Member.filter(merchant_id=merchant.id, unionid=unionid, openid=None, anonymized_at=None)
        .order_by("id")
        .first()
    )
    if candidate is None:
        return None
    try:
        attached = await Member.filter(id=candidate.id, openid=None).update(
            openid=openid, openid_digest=digest
        )
    except IntegrityError:  # a concurrent delivery created or attached this openid first: that member wins
        attached = 0
    if not attached:
        return await members.by_openid(merchant, openid)
    candidate.openid, candidate.openid_digest = openid, digest
    return candidate


async def registered(member: Member, effects: Effects) -> None:
    """After a member's creation by any channel is committed: its `member.registered` effect, now."""
    await effects.run_queued(members.MEMBER_REGISTERED, members.registered_key(member.id))
