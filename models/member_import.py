"""A bulk import of members (`handlers.member_import`): the job and its staged rows."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant


class ImportStatus(StrEnum):
    QUEUED = "queued"  # staged, waiting for its task
    RUNNING = "running"
    DONE = "done"


class RowStatus(StrEnum):
    PENDING = "pending"  # valid so far, not applied yet
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


class MemberImport(Model):
    """One uploaded file: its options, progress and counts. A dry run applies nothing."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", on_delete=fields.RESTRICT
    )
    merchant_id: int
    actor = fields.CharField(max_length=32)
    filename = fields.CharField(max_length=255)
    file_format = fields.CharField(max_length=8)  # csv | xlsx
    encoding = fields.CharField(max_length=16, default="")  # csv only: utf-8 | utf-8-sig | gb18030
    dry_run = fields.BooleanField(default=False)
    welcome_gifts = fields.BooleanField(default=False)  # new members get the registration effect
    status = fields.CharEnumField(ImportStatus, max_length=12, default=ImportStatus.QUEUED)
    total_rows = fields.IntField(default=0)
    processed_rows = fields.IntField(default=0)
    created = fields.IntField(default=0)
    updated = fields.IntField(default=0)
    unchanged = fields.IntField(default=0)
    rejected = fields.IntField(default=0)
    ignored_columns: Any = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "member_import"
        indexes = (("merchant_id", "created_at"),)


class MemberImportRow(Model):
    """One data row of the file, validated and staged; `status` says what applying it did (or would do).

    Written in bulk by hand-written SQL (COPY, then set-based statements); the profile columns are
    cleared once the job is done, only the outcome stays."""

    id = fields.BigIntField(primary_key=True)
    job: fields.ForeignKeyRelation[MemberImport] = fields.ForeignKeyField(
        "models.MemberImport", related_name="rows", on_delete=fields.CASCADE
    )
    job_id: int
    row_no = fields.IntField()  # the spreadsheet's row number (the header is row 1)
    external_id = fields.CharField(max_length=64, null=True)
    phone = fields.CharField(max_length=16, null=True)
    phone_masked = fields.CharField(max_length=16, default="")
    phone_shared = fields.BooleanField(default=False)  # another row of the file has this phone too
    name = fields.CharField(max_length=64, null=True)
    birthday = fields.DateField(null=True)
    gender = fields.CharField(max_length=16, null=True)
    tier_code = fields.CharField(max_length=32, null=True)
    points = fields.IntField(default=0)
    points_expire_at = fields.DatetimeField(null=True)
    stored_value_fen = fields.BigIntField(default=0)
    row_hash = fields.CharField(max_length=32, default="")
    new_code = fields.CharField(max_length=16, default="")  # the member code, if the row creates one
    status = fields.CharEnumField(RowStatus, max_length=12, default=RowStatus.PENDING)
    # 0 staged, 1 its member applied, 2 its opening balances posted and its outcome final.
    phase = fields.SmallIntField(default=0)
    field = fields.CharField(max_length=32, default="")
    reason = fields.CharField(max_length=255, default="")
    note = fields.CharField(max_length=255, default="")
    member_id = fields.IntField(null=True)

    class Meta:
        table = "member_import_row"
        unique_together = (("job", "row_no"),)
