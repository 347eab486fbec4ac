"""The emulated user-tag endpoints (用户标签管理): tags create / get / update / delete, members batchtagging
and batchuntagging, a tag's followers (`user/tag/get`) and a follower's tags (`tags/getidlist`).

WeChat's rules and errcodes: at most 100 tags per account (45056); a name at most 30 characters (45158)
and unique (45157); ids 0, 1 and 2 are system tags that cannot be changed (45058); an unknown tag id is
45159; a batch names 1–50 openids (40032), each a follower of the account (40003 unknown, 43004 not
following — the whole call fails); a user holds at most 20 tags (45059, the whole call fails, nothing
applied); `user/tag/get` pages 10,000 openids at a time after `next_openid`. Every call is recorded like
the others (`SimState.recorded`), so a test can count them and see each batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.wechat_sim.state import SimError, SimState
from bot.wechat_sim.tag_state import SimTag, SimTags

Body = dict[str, Any]
Endpoint = Callable[[SimState, web.Request, Body, str], Awaitable[Body | web.Response]]
MAX_TAGS = 100
MAX_NAME = 30
MAX_BATCH = 50
MAX_TAGS_PER_USER = 20
PAGE = 10_000
SYSTEM_TAGS = {0, 1, 2}


def _tags(state: SimState) -> SimTags:
    return state.user_tags


def _name(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise SimError(47001, "data format error: tag.name")
    if len(raw) > MAX_NAME:
        raise SimError(45158, "tag name too long")
    return raw


def _tag_body(body: Body) -> Body:
    tag = body.get("tag")
    if not isinstance(tag, dict):
        raise SimError(47001, "data format error: tag")
    return tag


def _existing(state: SimState, appid: str, raw: Any) -> SimTag:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SimError(47001, "data format error: tag id")
    if raw in SYSTEM_TAGS:
        raise SimError(45058, "can't modify sys tag")
    tag = _tags(state).of(appid).get(raw)
    if tag is None:
        raise SimError(45159, "invalid tag id")
    return tag


def _unique(state: SimState, appid: str, name: str, other_than: int | None = None) -> None:
    if any(tag.name == name and tag.id != other_than for tag in _tags(state).of(appid).values()):
        raise SimError(45157, "invalid tag name: the name exists")


async def tags_create(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    name = _name(_tag_body(body).get("name"))
    tags = _tags(state)
    _unique(state, appid, name)
    if len(tags.of(appid)) >= MAX_TAGS:
        raise SimError(45056, "too many tags now, no need to add new")
    tag = SimTag(tags.next_id, name)
    tags.next_id += 1
    tags.of(appid)[tag.id] = tag
    return {"tag": {"id": tag.id, "name": tag.name}}


async def tags_get(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    listed = sorted(_tags(state).of(appid).values(), key=lambda tag: tag.id)
    return {"tags": [{"id": tag.id, "name": tag.name, "count": len(tag.openids)} for tag in listed]}


async def tags_update(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    raw = _tag_body(body)
    tag = _existing(state, appid, raw.get("id"))
    name = _name(raw.get("name"))
    _unique(state, appid, name, other_than=tag.id)
    tag.name = name
    return {}


async def tags_delete(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    tag = _existing(state, appid, _tag_body(body).get("id"))
    del _tags(state).of(appid)[tag.id]
    return {}


def _batch(state: SimState, appid: str, body: Body) -> tuple[SimTag, list[str]]:
    openids = body.get("openid_list")
    if not isinstance(openids, list) or not openids:
        raise SimError(40032, "invalid openid list size")
    if len(openids) > MAX_BATCH:
        raise SimError(40032, "invalid openid list size, at most 50")
    tag = _existing(state, appid, body.get("tagid"))
    return tag, [state.recipient(appid, openid, must_follow=True) for openid in openids]


async def batch_tagging(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    tag, openids = _batch(state, appid, body)
    tags = _tags(state)
    for openid in openids:
        if openid not in tag.openids and len(tags.held_by(appid, openid)) >= MAX_TAGS_PER_USER:
            raise SimError(45059, "there is a user who has too many tags")
    tag.openids.update(openids)
    return {}


async def batch_untagging(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    tag, openids = _batch(state, appid, body)
    tag.openids.difference_update(openids)
    return {}


async def tag_followers(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    raw = body.get("tagid")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in _tags(state).of(appid):
        raise SimError(45159, "invalid tag id")
    after = body.get("next_openid") or ""
    ordered = sorted(_tags(state).of(appid)[raw].openids)
    page = [openid for openid in ordered if openid > after][:PAGE]
    answer: Body = {"count": len(page), "next_openid": page[-1] if len(page) == PAGE else ""}
    if page:
        answer["data"] = {"openid": page}
    return answer


async def tags_of_user(state: SimState, request: web.Request, body: Body, appid: str) -> Body:
    openid = state.recipient(appid, body.get("openid"), must_follow=False)
    return {"tagid_list": _tags(state).held_by(appid, openid)}


TAG_ROUTES: dict[str, tuple[str, Endpoint, bool]] = {
    "cgi-bin/tags/create": ("POST", tags_create, True),
    "cgi-bin/tags/get": ("GET", tags_get, True),
    "cgi-bin/tags/update": ("POST", tags_update, True),
    "cgi-bin/tags/delete": ("POST", tags_delete, True),
    "cgi-bin/tags/members/batchtagging": ("POST", batch_tagging, True),
    "cgi-bin/tags/members/batchuntagging": ("POST", batch_untagging, True),
    "cgi-bin/user/tag/get": ("POST", tag_followers, True),
    "cgi-bin/tags/getidlist": ("POST", tags_of_user, True),
}
