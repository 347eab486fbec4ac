"""What happens to a member's data after unfollowing: detach at once, erase after a grace period.

WeChat requires that "开发者收到用户取消关注事件时需要删除该用户的所有信息"; points, purchases and
redemptions, however, are accounting records that must survive. The policy (also in docs/retention.md):

1. On unfollowing (`handlers.registration.unsubscribe`, at once): the OA openid is set to NULL,
   `subscribed` to False and `unsubscribed_at` to now; the chat dialog state is deleted. Only a keyed
   HMAC digest of the openid (`openid_digest`) is kept, so nobody can read the openid back from it.
2. Within the merchant's grace period (`Merchant.retention_grace_days`, default 30 days) a returning
   follower is relinked to the same member through the digest, which cancels the pending erasure.
3. After the grace period (`erase_due`): the personal profile — name, phone, birthday, gender,
   unionid, openid_digest and the import digest — is erased and `anonymized_at` set, and staff notes
   about the member are deleted, and so are the member's tags (`member_tag`; the append-only tag
   history keeps its rows, tied to the anonymised member). The member row stays, keeping its random
   code, so ledger rows still reference it; the member can no longer be looked up or relinked. The
   merchant's own member number (`external_id`, from an import) stays too, so re-importing an old
   file refuses the erased member's row instead of creating the person again.
4. A member still bound through the mini-program (`mp_openid` set) is a user of the merchant's
   mini-program, not only a follower: the profile stays. If the binding is removed later, the member
   becomes due on the next run (its `unsubscribed_at` is still set).

`erase_due` selects "due and not yet done", so it is idempotent and a missed run is caught up by the
next one; `memberbot retention run` and the worker cron call it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.expressions import Subquery

from handlers.core import queries
from models.mall import MallOrder, OrderStatus
from models.member import Member, MemberNote
from models.merchant import Merchant

ERASED_FIELDS = ("name", "phone", "birthday", "gender", "unionid", "openid_digest", "import_hash")


def due_filter(merchant: Merchant, now: datetime) -> dict[str, object]:
    """Members of `merchant` whose profile is due for erasure at `now` and not erased yet."""
    return {
        "merchant_id": merchant.id,
        "unsubscribed_at__lte": now - timedelta(days=max(0, merchant.retention_grace_days)),
        "anonymized_at": None,
        "openid": None,
        "mp_openid": None,
    }


async def erase_due(now: datetime) -> int:
    """Erase every due profile, merchant by merchant; returns how many members were anonymised."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    erased = 0
    for merchant in await Merchant.all().order_by("id"):
        # One conditional UPDATE: a member relinked concurrently (openid set again) no longer matches.
        erased += await Member.filter(**due_filter(merchant, now)).update(
            anonymized_at=now, **dict.fromkeys(ERASED_FIELDS)
        )
        await _erase_addresses(merchant)
        await _erase_notes(merchant)
        await _erase_tags(merchant)
    return erased


async def _erase_addresses(merchant: Merchant) -> None:
    """Shipping addresses (a name, a phone, a place) of anonymised members go too, except on an order
    still waiting to ship. Idempotent: only addresses still present are touched."""
    anonymised = Member.filter(merchant_id=merchant.id, anonymized_at__isnull=False).values("id")
    await (
        MallOrder.filter(merchant_id=merchant.id, address__isnull=False, member_id__in=Subquery(anonymised))
        .exclude(status=OrderStatus.TO_SHIP)
        .update(address=None)
    )


async def _erase_notes(merchant: Merchant) -> None:
    """Staff notes about anonymised members (their text is about a person) are deleted: the one deletion
    `member_note`'s trigger allows. Idempotent."""
    anonymised = Member.filter(merchant_id=merchant.id, anonymized_at__isnull=False).values("id")
    await MemberNote.filter(merchant_id=merchant.id, member_id__in=Subquery(anonymised)).delete()


_ERASE_TAGS = """
WITH gone AS (
    DELETE FROM member_tag mt USING member m
     WHERE m.id = mt.member_id AND m.merchant_id = :merchant AND m.anonymized_at IS NOT NULL
    RETURNING mt.tag_id
)
UPDATE tag t SET member_count = GREATEST(t.member_count - g.n, 0)
  FROM (SELECT tag_id, count(*) AS n FROM gone GROUP BY tag_id) g
 WHERE t.id = g.tag_id
"""


async def _erase_tags(merchant: Merchant) -> None:
    """Anonymised members' tags (a profile of the person) are deleted, the tags' counts following.
    Idempotent."""
    await queries.fetch_rows(_ERASE_TAGS, merchant=merchant.id)
