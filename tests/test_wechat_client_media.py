"""The WeChat client's media calls over real HTTP against the simulator: permanent QR codes, image
upload (validated before sending, retried with a fresh form after a token refresh) and image messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, ClientTimeout
from redis.asyncio import Redis

from bot.app import connect_redis
from handlers.members.member_qr import qr_png
from handlers.wechat import errors
from handlers.wechat.client import WECHAT_API_ROOT, AppCredentials, WeChatClient
from tests.support.wechat_sim import WeChatSim

OA = AppCredentials("wxoa0000000000001", "oa-secret")
FAN = "o-fan-0001"
PNG = qr_png("http://weixin.qq.com/q/client")


@pytest.fixture
async def wx(redis_url: str, wechat_sim: WeChatSim) -> AsyncIterator[WeChatClient]:
    wechat_sim.add_app(OA.appid, OA.secret)
    wechat_sim.add_follower(OA.appid, FAN)
    redis: Redis = connect_redis(redis_url)
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        yield WeChatClient(session, redis, wechat_sim.url)
    await redis.aclose()


async def test_permanent_qrcode_has_no_expiry(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    qr = await wx.create_qrcode(OA, "staff_7", None)
    assert qr.expire_seconds is None and qr.url.startswith("http://weixin.qq.com/q/")
    assert wechat_sim.records("cgi-bin/qrcode/create")[0]["body"] == {
        "action_name": "QR_LIMIT_STR_SCENE",
        "action_info": {"scene": {"scene_str": "staff_7"}},
    }
    wechat_sim.state.permanent_qr_limit = 1
    with pytest.raises(errors.QrCodeLimitReached) as caught:
        await wx.create_qrcode(OA, "staff_8", None)
    assert caught.value.errcode == 45029 and "上限" in caught.value.message


async def test_showqrcode_url_is_wechats_or_the_simulators(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    assert (
        wx.showqrcode_url("gQH+4Dw/AAA=") == f"{wechat_sim.url}/cgi-bin/showqrcode?ticket=gQH%2B4Dw%2FAAA%3D"
    )
    real = WeChatClient(wx.session, wx.redis, WECHAT_API_ROOT)
    assert real.showqrcode_url("abc") == "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=abc"


async def test_upload_image_then_send_it(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    media_id = await wx.upload_image(OA, PNG, name="invite-1")
    assert wechat_sim.state.media[media_id].data == PNG
    [record] = wechat_sim.records("cgi-bin/media/upload")
    assert record["body"]["filename"] == "invite-1.png" and record["query"]["type"] == "image"
    wechat_sim.interact(OA.appid, FAN)
    await wx.send_custom_image(OA, FAN, media_id)
    [sent] = wechat_sim.records("cgi-bin/message/custom/send")
    assert sent["body"] == {"touser": FAN, "msgtype": "image", "image": {"media_id": media_id}}
    with pytest.raises(errors.InvalidArgument) as caught:
        await wx.send_custom_image(OA, FAN, "SIMMEDIAforgotten")
    assert caught.value.errcode == 40007


async def test_upload_retries_with_a_fresh_form_after_a_token_refresh(
    wx: WeChatClient, wechat_sim: WeChatSim
) -> None:
    await wx.access_token(OA)
    wechat_sim.invalidate_token(OA.appid)
    media_id = await wx.upload_image(OA, PNG)
    assert [r["errcode"] for r in wechat_sim.records("cgi-bin/media/upload")] == [40001, 0]
    assert wechat_sim.state.media[media_id].data == PNG


@pytest.mark.parametrize("image", [b"", b"%PDF-1.7", b"\x89PNG" + b"\0" * (10 * 1024 * 1024)])
async def test_upload_is_validated_before_calling(
    wx: WeChatClient, wechat_sim: WeChatSim, image: bytes
) -> None:
    with pytest.raises(errors.WeChatRequestInvalid) as caught:
        await wx.upload_image(OA, image)
    assert caught.value.field == "image"
    with pytest.raises(errors.WeChatRequestInvalid):
        await wx.send_custom_image(OA, FAN, "")
    assert wechat_sim.records() == []


async def test_quota_45047_is_out_of_the_window(wx: WeChatClient, wechat_sim: WeChatSim) -> None:
    media_id = await wx.upload_image(OA, PNG)
    wechat_sim.interact(OA.appid, FAN)
    for _ in range(5):
        await wx.send_custom_image(OA, FAN, media_id)
    with pytest.raises(errors.OutOfResponseWindow) as caught:
        await wx.send_custom_image(OA, FAN, media_id)
    assert caught.value.errcode == 45047
