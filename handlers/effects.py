"""The one registry of durable side effects: what each queued task kind does (`handlers.core.tasks`).

The app, the worker and the tests all call `build()`, so every process runs the same effects; there
is nothing to install. Each handler is idempotent (ledger keys, unique rows), as a task may run again
after a crash between its work and its `done`.

- `member.registered`, queued by a member's creation (follow, mini-program): the registration bonus,
  registration-triggered referral awards, the new-member coupons;
- `member.profile_completed`, by the profile's first completion: the profile bonus;
- `purchase.completed`, by a till purchase: the tier review, first-purchase referral awards;
- `wallet.topped_up`, by a stored-value top-up: the tier review (recharge criteria);
- `tier.upgraded`, by an upgrade (earned or bought): the tier's gift coupons, the member's notice;
- `notice.send`, by every member notice (`handlers.notices`): its delivery;
- `tag.recompute`, by an automatic tag's creation or rule change: that tag's recomputation
  (`handlers.tags.recompute`; tens of seconds on a million members, so not inline);
- `segment.wechat_sync` / `segment.wechat_drop`, by a segment's sync to (or deletion of) its WeChat user
  tag (`handlers.segments.wechat_sync`): the WeChat calls, off the request;
- `members.import`, by a member import's upload (`handlers.member_import`): applying its rows, in
  time-boxed runs (not inline: the upload's response does not wait for it);
- `campaign.plan` / `campaign.send`, by a campaign's start (`handlers.campaigns`): its recipients,
  then its messages, one task per page of members (shared by the worker processes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from handlers.campaigns import sending as campaigns
from handlers.campaigns.sms import LoggingProvider, SmsProvider
from handlers.core.tasks import Dispatch, Effects, Handler, no_dispatch
from handlers.coupons import redeem as coupons
from handlers.loyalty import bonuses, tiers
from handlers.loyalty import config as loyalty_config
from handlers.member_import import jobs as member_import
from handlers.members import lookup as members
from handlers.members import member_qr, registration
from handlers.notices.delivery import NOTICE_SEND, NoticeServices, batch_sender, sender, tell
from handlers.segments import wechat_sync
from handlers.tags import recompute as tag_recompute
from handlers.till import purchase
from handlers.wallet import ledger as wallet
from models.member import Member
from models.merchant import Merchant


async def member_registered(effects: Effects, payload: Mapping[str, Any], now: datetime) -> None:
    member = await Member.get(id=payload["member_id"])
    await bonuses.registration_bonus(member, now=now, effects=effects)
    await coupons.new_member_gift(member, now=now)


async def profile_completed(effects: Effects, payload: Mapping[str, Any], now: datetime) -> None:
    await bonuses.profile_bonus(await Member.get(id=payload["member_id"]), now=now)


async def tier_upgraded(effects: Effects, payload: Mapping[str, Any], now: datetime) -> None:
    merchant = await Merchant.get(id=payload["merchant_id"])
    _, ladder = await loyalty_config.current_tiers(merchant.id)
    tier = next((t for t in ladder if t.code == payload["tier"]), None)
    if tier is None:  # a tier removed from the ladder since has no gifts left to give, nor news
        return
    await coupons.tier_gift(merchant, payload["member_id"], tier, now=now)
    await tell(
        effects,
        "tier_upgraded",
        merchant_id=merchant.id,
        member_id=payload["member_id"],
        event_key=payload.get("change", f"tier:{tier.code}"),
        context={
            "tier": tier.name,
            "benefits": "、".join(member_qr.benefit_lines(tier.benefits)),
            "gift_points": payload.get("gift_points", 0),
        },
    )


HANDLERS: dict[str, Handler] = {
    members.MEMBER_REGISTERED: member_registered,
    registration.PROFILE_COMPLETED: profile_completed,
    purchase.AFTER_PURCHASE: purchase.after_purchase,
    wallet.AFTER_TOP_UP: wallet.after_top_up,
    tiers.TIER_UPGRADED: tier_upgraded,
    member_import.IMPORT_TASK: member_import.run_task,
    tag_recompute.TAG_RECOMPUTE: tag_recompute.run_task,
}
# The others shape what the member or cashier sees next (the welcome's bonus, the receipt's tier), so
# they run in the request, right after commit; a failure is retried by `run_due`. An import runs for
# minutes, a tag recomputation tens of seconds: their responses do not wait for them.
INLINE = frozenset(HANDLERS) - {member_import.IMPORT_TASK, tag_recompute.TAG_RECOMPUTE}


def build(
    dispatch: Dispatch = no_dispatch, services: NoticeServices | None = None, sms: SmsProvider | None = None
) -> Effects:
    """The registry every process runs; `services` lets it send notices and campaigns (without: they
    wait for a process that can, e.g. the CLI leaves them to the worker); `sms`: the SMS provider
    (default: the logging one)."""
    wechat = services.wechat if services is not None else None
    senders = (
        None
        if services is None
        else campaigns.CampaignServices(services.wechat, services.redis, sms or LoggingProvider())
    )
    return Effects(
        {
            **HANDLERS,
            NOTICE_SEND: sender(services),
            **wechat_sync.handlers(wechat),
            campaigns.CAMPAIGN_PLAN: campaigns.plan,
            campaigns.CAMPAIGN_SEND: campaigns.sender(senders),
        },
        inline=INLINE,
        dispatch=dispatch,
        batch={NOTICE_SEND: batch_sender(services)},  # a batch of notices is sent with a few statements
    )
