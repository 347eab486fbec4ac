"""Campaigns: one message to an audience on one channel, one delivery record per (campaign, member);
journeys: campaign content sent once per member when a trigger fires."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.member import Member
    from models.merchant import Merchant


class CampaignChannel(StrEnum):
    MASS = "mass"  # OA mass send (群发) by openid list, or to a synced WeChat tag
    SUBSCRIBE = "subscribe"  # mini-program subscribe message (one unused grant, one send)
    CUSTOM = "custom"  # OA customer-service message, inside the 48-hour window and its quota
    SMS = "sms"  # through the SMS provider, to members with a phone and SMS consent


class CampaignState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class RecipientStatus(StrEnum):
    PENDING = "pending"  # planned, not yet claimed by a sender
    SENDING = "sending"  # claimed, budget taken, the attempt recorded before the call
    SENT = "sent"
    FAILED = "failed"  # `errcode` / `reason`
    SKIPPED = "skipped"  # the governor or the member's reach said no (`reason`)
    HOLDOUT = "holdout"  # in the campaign's random holdout share: never messaged, compared against


class Campaign(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    name = fields.CharField(max_length=64)
    channel = fields.CharEnumField(CampaignChannel, max_length=12)
    segment_id = fields.IntField(null=True)  # the audience; null: every reachable member
    # The channel's content: `text` (jinja2) for mass/custom/SMS-params, `fields` keyword → jinja2 for
    # subscribe, `page`, `sms_template_id`, `wechat_tag_id` for a mass send to a synced WeChat tag.
    content: dict[str, Any] = fields.JSONField(default=dict)
    template_id = fields.CharField(max_length=64, default="")  # subscribe / SMS template
    state = fields.CharEnumField(CampaignState, max_length=12, default=CampaignState.DRAFT)
    scheduled_at = fields.DatetimeField(null=True)
    throttle_per_second = fields.IntField(default=50)
    holdout_pct = fields.SmallIntField(default=10)
    attach_coupon_template_id = fields.IntField(null=True)
    attach_points = fields.IntField(default=0)
    conversion_days = fields.SmallIntField(default=7)
    validated_at = fields.DatetimeField(null=True)  # content rendered and checked for a sample member
    planned = fields.BooleanField(default=False)  # every recipient row is written
    plan_cursor = fields.IntField(default=0)  # the last member id planned (a crashed plan resumes there)
    resumes = fields.IntField(default=0)  # each resume makes new send task keys
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    journey_id = fields.IntField(null=True)  # the journey this campaign row carries (its content)
    created_by = fields.CharField(max_length=32, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "campaign"
        indexes = (("merchant_id", "state"), ("state", "scheduled_at"))


class CampaignRecipient(Model):
    """One member of one campaign's audience: `(campaign, member)` is unique, so nobody is messaged
    twice by one campaign, however often planning or sending is retried, by however many workers."""

    id = fields.BigIntField(primary_key=True)
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="recipients", on_delete=fields.RESTRICT
    )
    campaign_id: int
    merchant_id = fields.IntField()
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="campaign_deliveries", on_delete=fields.RESTRICT
    )
    member_id: int
    channel = fields.CharEnumField(CampaignChannel, max_length=12)
    status = fields.CharEnumField(RecipientStatus, max_length=12, default=RecipientStatus.PENDING)
    reason = fields.CharField(max_length=64, default="")
    errcode = fields.IntField(null=True)
    msgid = fields.CharField(max_length=64, null=True)
    attempts = fields.SmallIntField(default=0)
    claimed_at = fields.DatetimeField(null=True)  # budget taken (counts against the caps from then)
    sent_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "campaign_recipient"
        unique_together = (("campaign", "member"),)
        # Also partial (migration 0030, beyond what tortoise declares): (member_id, claimed_at) WHERE
        # claimed_at IS NOT NULL, and (merchant_id, msgid) WHERE msgid IS NOT NULL.
        indexes = (("campaign_id", "status"),)


class MassJob(Model):
    """One OA mass-send call (`mass/send` of ≤ 10,000 openids or `mass/sendall` to a tag) and WeChat's
    `MASSSENDJOBFINISH` report of it."""

    id = fields.BigIntField(primary_key=True)
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="mass_jobs", on_delete=fields.RESTRICT
    )
    campaign_id: int
    merchant_id = fields.IntField()
    client_msg_id = fields.CharField(max_length=64, unique=True)
    msg_id = fields.CharField(max_length=64, null=True)
    recipients = fields.IntField(default=0)
    status = fields.CharField(max_length=64, default="")  # MASSSENDJOBFINISH's Status
    total_count = fields.IntField(null=True)
    sent_count = fields.IntField(null=True)
    error_count = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "campaign_mass_job"
        indexes = (("merchant_id", "msg_id"),)


class JourneyTrigger(StrEnum):
    ENTERS_SEGMENT = "enters_segment"
    DAYS_AFTER_REGISTRATION = "days_after_registration"
    DAYS_AFTER_FIRST_PURCHASE = "days_after_first_purchase"


class Journey(Model):
    """A trigger and the campaign (its content, channel, holdout, attachment) sent once per member."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    name = fields.CharField(max_length=64)
    trigger = fields.CharEnumField(JourneyTrigger, max_length=32)
    segment_id = fields.IntField(null=True)
    days = fields.SmallIntField(default=0)
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="journeys", on_delete=fields.RESTRICT
    )
    campaign_id: int
    active = fields.BooleanField(default=False)
    # Only events after this moment trigger (activating a journey never reaches back into history).
    active_since = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "journey"


class MarketingCaps(Model):
    """A merchant's marketing budgets per member (a merchant without a row has the defaults of
    `handlers.rules.campaigns.Caps`)."""

    merchant: fields.OneToOneRelation[Merchant] = fields.OneToOneField(
        "models.Merchant", primary_key=True, on_delete=fields.RESTRICT
    )
    merchant_id: int
    marketing_per_day = fields.SmallIntField(default=1)
    sms_per_day = fields.SmallIntField(default=1)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "marketing_caps"
