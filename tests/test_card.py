from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from defusedxml import ElementTree as ET
from PIL import Image

from handlers.core.errors import DomainError, Forbidden, NotFound, ValidationError
from handlers.members import member_qr
from models.member import Member
from models.merchant import Merchant
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import RUNTIME

SECRET = b"card-test-secret-0123456789abcdef"
NOW = datetime(2030, 3, 10, 4, 0, 30, tzinfo=UTC)  # 30 s into a 60 s window


@pytest.fixture
async def shop(client: Any) -> Merchant:
    return await make_merchant()


async def test_token_round_trip_within_two_windows(shop: Merchant) -> None:
    member = await make_member(shop)
    issued = member_qr.issue_token(shop, member.id, secret=SECRET, now=NOW)
    assert len(issued.token) <= 32
    assert (issued.refresh_in, issued.expires_in) == (30, 90)
    for later in (0, 29, 89):
        found = await member_qr.resolve_scan(
            shop, issued.token, secret=SECRET, now=NOW + timedelta(seconds=later)
        )
        assert found.id == member.id


async def test_token_older_than_two_windows_is_refused_as_expired(shop: Merchant) -> None:
    member = await make_member(shop)
    token = member_qr.issue_token(shop, member.id, secret=SECRET, now=NOW).token
    with pytest.raises(DomainError) as caught:
        await member_qr.resolve_scan(shop, token, secret=SECRET, now=NOW + timedelta(seconds=90))
    assert caught.value.code == "card_expired" and "过期" in caught.value.message


async def test_another_merchants_token_and_a_forged_one_are_refused(shop: Merchant) -> None:
    other = await make_merchant("other")
    stranger = await make_member(other, openid="o-stranger")
    await make_member(shop)  # the same member id may exist in this merchant too
    token = member_qr.issue_token(other, stranger.id, secret=SECRET, now=NOW).token
    with pytest.raises(DomainError) as caught:
        await member_qr.resolve_scan(shop, token, secret=SECRET, now=NOW)
    assert caught.value.code == "card_invalid"
    forged = member_qr.issue_token(
        shop, stranger.id, secret=b"another-secret-0123456789abcdef", now=NOW
    ).token
    with pytest.raises(DomainError, match="无法识别"):
        await member_qr.resolve_scan(shop, forged, secret=SECRET, now=NOW)
    with pytest.raises(DomainError, match="无法识别"):
        await member_qr.resolve_scan(shop, "1.2.3", secret=SECRET, now=NOW)


async def test_typed_member_code_is_the_fallback(shop: Merchant) -> None:
    member = await make_member(shop)
    typed = f" {member.code[:4].lower()}-{member.code[4:]} "
    assert (await member_qr.resolve_scan(shop, typed, secret=SECRET, now=NOW)).id == member.id
    for unknown in ("ZZZZZZZZ", "Z" * 17, "会员号", "ËÉČÇ🏻"):
        with pytest.raises(NotFound):
            await member_qr.resolve_scan(shop, unknown, secret=SECRET, now=NOW)
    with pytest.raises(ValidationError):
        await member_qr.resolve_scan(shop, "   ", secret=SECRET, now=NOW)


async def test_anonymised_member_cannot_be_scanned(shop: Merchant) -> None:
    member = await make_member(shop)
    token = member_qr.issue_token(shop, member.id, secret=SECRET, now=NOW).token
    await Member.filter(id=member.id).update(anonymized_at=NOW)
    with pytest.raises(DomainError):
        await member_qr.resolve_scan(shop, token, secret=SECRET, now=NOW)
    with pytest.raises(NotFound):
        await member_qr.resolve_scan(shop, member.code, secret=SECRET, now=NOW)


def test_png_is_a_decodable_square_image() -> None:
    png = member_qr.qr_png("1.abc.0123456789ABCD")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.size[0] == image.size[1] >= 21 * 8
    assert member_qr.png_data_url(png).startswith("data:image/png;base64,iVBOR")


def test_svg_is_well_formed() -> None:
    root = ET.fromstring(member_qr.qr_svg("1.abc.0123456789ABCD"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox", "").startswith("0 0 ")
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


def test_card_link_token_round_trip_expiry_and_merchant_scope() -> None:
    token = member_qr.link_token(SECRET, 1, 42, now=NOW)
    assert "o-" not in token and member_qr.verify_link(SECRET, 1, token, now=NOW + timedelta(minutes=9)) == 42
    with pytest.raises(Forbidden, match="过期"):
        member_qr.verify_link(SECRET, 1, token, now=NOW + timedelta(minutes=10))
    with pytest.raises(Forbidden, match="无效"):
        member_qr.verify_link(SECRET, 2, token, now=NOW)
    member_id, expires, mac = token.split(".")
    for bad in (f"43.{expires}.{mac}", f"{member_id}.{int(expires) + 600}.{mac}", "", "x" * 100, "1.2"):
        with pytest.raises(Forbidden):
            member_qr.verify_link(SECRET, 1, bad, now=NOW)


# The H5 card page ---------------------------------------------------------------------------------


async def test_card_page_shows_the_card_and_refreshes_its_qr(client: Any, shop: Merchant) -> None:
    member = await make_member(shop, name="<b>小明</b>")
    secret = client.app[RUNTIME].secret
    token = member_qr.link_token(secret, shop.id, member.id, now=datetime.now(UTC))
    response = await client.get(f"/card/shop?t={token}")
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert "shop 门店" in html and member.code in html and "普通会员" in html
    assert "&lt;b&gt;小明&lt;/b&gt;" in html and "<b>小明</b>" not in html  # autoescaped
    assert f'src="/card/shop/qr.svg?t={token}"' in html and "setInterval" in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'nonce-" in response.headers["Content-Security-Policy"]
    assert member.openid is not None and member.openid not in html
    qr = await client.get(f"/card/shop/qr.svg?t={token}")
    assert qr.status == 200 and qr.content_type == "image/svg+xml"
    assert ET.fromstring(await qr.text()).tag.endswith("svg")


@pytest.mark.parametrize("path", ["/card/shop", "/card/shop/qr.svg"])
async def test_card_page_refuses_forged_expired_and_foreign_links_with_html(
    client: Any, shop: Merchant, path: str
) -> None:
    member = await make_member(shop)
    secret = client.app[RUNTIME].secret
    other = await make_merchant("other")
    expired = member_qr.link_token(secret, shop.id, member.id, now=datetime.now(UTC) - timedelta(minutes=11))
    foreign = member_qr.link_token(secret, other.id, member.id, now=datetime.now(UTC))
    wrong_key = b"not-the-app-secret-0123456789abcdef"
    forged = member_qr.link_token(wrong_key, shop.id, member.id, now=datetime.now(UTC))
    for token, words in ((expired, "已过期"), (foreign, "无效"), (forged, "无效"), ("", "无效")):
        response = await client.get(f"{path}?t={token}")
        assert response.status == 403 and response.content_type == "text/html"
        text = await response.text()
        assert words in text and "会员卡" in text and member.code not in text
    missing = await client.get(f"/card/nope{path.removeprefix('/card/shop')}?t=x")
    assert missing.status == 404 and missing.content_type == "text/html"


@pytest.mark.parametrize(
    "path", ["/card/shop?t=%C2%B2.1.x", "/card/sh%00op?t=1.2.x", "/card/shop?t=1.99999999999999999999999.x"]
)
async def test_card_page_answers_odd_links_with_a_page_not_a_500(
    client: Any, shop: Merchant, path: str
) -> None:
    response = await client.get(path)
    assert response.status in (403, 404)
    assert response.content_type == "text/html"


def test_a_phone_in_other_scripts_digits_is_refused() -> None:
    from handlers.core.errors import ValidationError
    from handlers.members.profile import parse_phone

    with pytest.raises(ValidationError):
        parse_phone("13١٢٣٤٥٦٧٨٩")
    assert parse_phone("138 1234 5678") == "13812345678"
