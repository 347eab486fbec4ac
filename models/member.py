"""A member of one merchant's loyalty programme."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant, Store
    from models.staff import Staff


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"
    UNDISCLOSED = "undisclosed"


class MemberSource(StrEnum):
    OA_SUBSCRIBE = "oa_subscribe"
    OA_REFERRAL = "oa_referral"
    OA_STAFF = "oa_staff"
    MINI_PROGRAM = "mini_program"
    STAFF = "staff"
    IMPORT = "import"


class Member(Model):
    """Identity and profile. Ledger rows reference the member, so erasure anonymises and never deletes."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="members", on_delete=fields.RESTRICT
    )
    merchant_id: int
    code = fields.CharField(max_length=16)
    openid = fields.CharField(max_length=64, null=True)
    unionid = fields.CharField(max_length=64, null=True)
    mp_openid = fields.CharField(max_length=64, null=True)
    phone = fields.CharField(max_length=16, null=True)
    name = fields.CharField(max_length=64, null=True)
    gender = fields.CharEnumField(Gender, max_length=16, null=True)
    birthday = fields.DateField(null=True)
    registered_at = fields.DatetimeField(auto_now_add=True)
    profile_completed_at = fields.DatetimeField(null=True)
    source = fields.CharEnumField(MemberSource, max_length=16, default=MemberSource.OA_SUBSCRIBE)
    referrer: fields.ForeignKeyNullableRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="referrals", null=True, on_delete=fields.SET_NULL
    )
    referrer_id: int | None
    acquired_by: fields.ForeignKeyNullableRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="acquired_members", null=True, on_delete=fields.SET_NULL
    )
    acquired_by_id: int | None
    # The acquiring store: the store of the staff whose QR brought the member in, fixed at registration.
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="members", null=True, on_delete=fields.SET_NULL
    )
    store_id: int | None
    # Keyed digest of the Official Account openid, kept after unfollowing (the openid itself is
    # detached at once) so a returning follower gets the same member back within the grace period.
    openid_digest = fields.CharField(max_length=64, null=True)
    subscribed = fields.BooleanField(default=False)
    unsubscribed_at = fields.DatetimeField(null=True)
    anonymized_at = fields.DatetimeField(null=True)
    # The merchant's own member number from a bulk import (`handlers.member_import`): the identity a
    # re-import finds the member by. Kept on erasure, so a re-import refuses an erased member's row.
    external_id = fields.CharField(max_length=64, null=True)
    # Digest of the profile fields the last import applied: the same row imported again changes nothing.
    import_hash = fields.CharField(max_length=32, null=True)
    # Kept by the triggers of migration 0013, never written by Python: the latest visit (a completed
    # till purchase or a daily check-in; a make-up is not a visit) and the cash paid over completed,
    # not refunded purchases.
    last_visit_at = fields.DatetimeField(null=True)
    lifetime_spend_fen = fields.BigIntField(default=0)
    # Blocked by a manager: cannot earn, spend or redeem (`handlers.members.blocking`).
    blocked_at = fields.DatetimeField(null=True)
    blocked_reason = fields.CharField(max_length=200, default="")
    # Marketing SMS only with the member's consent; replying TD (回复TD退订) withdraws it.
    sms_consent = fields.BooleanField(default=False)

    class Meta:
        table = "member"
        unique_together = (
            ("merchant", "code"),
            ("merchant", "openid"),
            ("merchant", "mp_openid"),
            ("merchant", "unionid"),  # one person, one member (NULLs do not collide)
            ("merchant", "external_id"),
        )
        # The back office's sort keys, each with the id as tie-break (keyset pagination); name and
        # last-visit indexes on expressions are in migration 0013.
        indexes = (
            ("merchant_id", "phone"),
            ("merchant_id", "openid_digest"),
            ("merchant_id", "referrer_id"),
            ("merchant_id", "registered_at", "id"),
            ("merchant_id", "lifetime_spend_fen", "id"),
            ("merchant_id", "store_id"),
        )


class MemberNote(Model):
    """A dated note by staff about a member (联系记录). Append-only: a trigger refuses UPDATE, and DELETE
    except of an erased member's notes (docs/retention.md)."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="notes", on_delete=fields.RESTRICT
    )
    member_id: int
    author: fields.ForeignKeyRelation[Staff] = fields.ForeignKeyField(
        "models.Staff", related_name="member_notes", on_delete=fields.RESTRICT
    )
    author_id: int
    text = fields.CharField(max_length=1000)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member_note"
        indexes = (("member_id", "id"),)
