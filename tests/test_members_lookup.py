"""`members.resolve`: one rule for every door that names a member by id or by code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.core.errors import ErrorCode, NotFound, ValidationError
from handlers.members import lookup as members
from models.member import Member
from tests.support.factories import make_member, make_merchant, staff_headers


async def test_an_erased_member_is_found_by_no_one(client: Any) -> None:
    shop, other = await make_merchant("shop"), await make_merchant("other")
    alice = await make_member(shop, openid="o-alice")
    stranger = await make_member(other, openid="o-stranger")
    assert (await members.resolve(shop, member_id=alice.id)).id == alice.id
    assert (await members.resolve(shop, code=f" {alice.code.lower()} ")).id == alice.id
    await Member.filter(id=alice.id).update(anonymized_at=datetime.now(UTC))
    cases = [
        ({"member_id": alice.id}, "member_id"),
        ({"code": alice.code}, "member_code"),
        ({"member_id": stranger.id}, "member_id"),
        ({"code": "NOT-A-CODE"}, "member_code"),
        ({"member_id": alice.id, "field": "qr"}, "qr"),
    ]
    for given, field in cases:
        with pytest.raises(NotFound) as caught:
            await members.resolve(shop, **given)
        assert (caught.value.code, caught.value.field) == (ErrorCode.MEMBER_NOT_FOUND, field)
    with pytest.raises(ValidationError):
        await members.resolve(shop)


async def test_the_coupon_check_refuses_an_erased_member_named_by_id(client: Any) -> None:
    """It used to look members up by id without the erased rule the other doors applied."""
    shop = await make_merchant()
    member = await make_member(shop)
    headers = await staff_headers(client, shop)
    await Member.filter(id=member.id).update(anonymized_at=datetime.now(UTC))
    body = {"member_id": member.id, "code": "ABCDEFGHJK", "order_fen": 1000}
    response = await client.post("/api/staff/coupons/check", json=body, headers=headers)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "member_not_found"
