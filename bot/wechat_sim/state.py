"""The simulator's world: apps, tokens, followers, windows, grants, codes, injected errors and records.

Everything is in memory and driven by `SimState.now()`, a wall clock plus `clock_offset` that tests move
forward with `advance()` instead of sleeping.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bot.wechat_sim.campaign_state import SimCampaigns
from bot.wechat_sim.tag_state import SimTags

TOKEN_SECONDS = 7200
TOKEN_REFRESH_MARGIN = 300
FORCE_REFRESH_PER_DAY = 20
WINDOW_SECONDS = 48 * 3600
WINDOW_QUOTA = 5
CODE_SECONDS = 300
CLIENT_MSG_ID_SECONDS = 600
MAX_DELAY_SECONDS = 60
DAY = 86400
MEDIA_SECONDS = 3 * DAY  # temporary media (media/upload) lives three days
PERMANENT_QR_LIMIT = 100_000  # QR_LIMIT_SCENE / QR_LIMIT_STR_SCENE codes per account


class SimError(Exception):
    """An error answer `{"errcode", "errmsg"}` (HTTP 200, like WeChat)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class SimToken:
    appid: str
    expires_at: float
    revoked: bool = False


@dataclass
class SimApp:
    appid: str
    secret: str
    token: str | None = None
    force_refreshes: list[float] = field(default_factory=list)
    templates: dict[str, tuple[str, ...] | None] = field(default_factory=dict)


@dataclass
class SimUser:
    unionid: str | None
    following: bool = True


@dataclass
class SimWindow:
    opened_at: float
    sent: int = 0


@dataclass
class SimCode:
    appid: str
    openid: str
    unionid: str | None
    issued_at: float
    used: bool = False


@dataclass
class SimMedia:
    """Temporary media uploaded through media/upload."""

    appid: str
    type: str
    content_type: str
    data: bytes = field(repr=False)
    created_at: float


@dataclass
class SimInjected:
    errcode: int
    errmsg: str
    status: int = 200
    delay: float = 0.0  # seconds the answer is held back

    @property
    def fails(self) -> bool:
        """False for a slow success (`errcode` 0 below status 500): the call is handled, only late."""
        return self.errcode != 0 or self.status >= 500


@dataclass
class SimState:
    """All simulator state. Tests may call these methods directly or through the `/sim/...` routes."""

    apps: dict[str, SimApp] = field(default_factory=dict)
    tokens: dict[str, SimToken] = field(default_factory=dict)
    users: dict[tuple[str, str], SimUser] = field(default_factory=dict)
    windows: dict[tuple[str, str], SimWindow] = field(default_factory=dict)
    grants: dict[tuple[str, str, str], int] = field(default_factory=dict)
    codes: dict[str, SimCode] = field(default_factory=dict)
    sent_msgids: dict[tuple[str, str, str], tuple[int, float]] = field(default_factory=dict)
    menus: dict[str, dict[str, Any]] = field(default_factory=dict)  # appid → the menu (menu.py)
    user_tags: SimTags = field(default_factory=SimTags)  # user tags (tags.py)
    qrcodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, SimMedia] = field(default_factory=dict)
    permanent_qr_limit: int = PERMANENT_QR_LIMIT
    injected: dict[str, deque[SimInjected]] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    custom_send_per_minute: int = 100
    wxacode_per_minute: int = 5000
    clock_offset: float = 0.0
    next_msgid: int = 1000
    campaigns: SimCampaigns = field(default_factory=SimCampaigns)  # mass send, SMS (campaigns.py)

    # -- clock ---------------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (token expiry, windows, code lifetime, anti-replay)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.clock_offset += seconds

    # -- set-up --------------------------------------------------------------------------------------------

    def add_app(self, appid: str, secret: str) -> SimApp:
        """Register an Official Account or mini-program (registering again updates the secret)."""
        if not appid or not secret:
            raise ValueError("appid and secret are required")
        app = self.apps.setdefault(appid, SimApp(appid, secret))
        app.secret = secret
        return app

    def app(self, appid: str) -> SimApp:
        if appid not in self.apps:
            raise ValueError(f"unknown appid {appid!r}")
        return self.apps[appid]

    def add_follower(
        self, appid: str, openid: str, unionid: str | None = None, *, following: bool = True
    ) -> None:
        """Make `openid` a known user of `appid`; `following=False` models one who has unfollowed."""
        self.app(appid)
        if not openid:
            raise ValueError("openid is required")
        self.users[(appid, openid)] = SimUser(unionid=unionid, following=following)

    def interact(self, appid: str, openid: str) -> None:
        """The user messaged the account: opens a 48-hour customer-service window of 5 messages."""
        self._known_user(appid, openid)
        self.windows[(appid, openid)] = SimWindow(opened_at=self.now())

    def add_template(self, appid: str, template_id: str, keys: tuple[str, ...] | None = None) -> None:
        """Register a template for template and subscribe messages; `keys`, if given, must be sent."""
        if not template_id:
            raise ValueError("template_id is required")
        self.app(appid).templates[template_id] = tuple(keys) if keys is not None else None

    def grant(self, appid: str, openid: str, template_id: str, count: int = 1) -> None:
        """The user accepted a subscribe-message request `count` times: one send per acceptance."""
        self._known_user(appid, openid)
        if count < 1:
            raise ValueError("count must be at least 1")
        key = (appid, openid, template_id)
        self.grants[key] = self.grants.get(key, 0) + count

    def mint_code(self, appid: str, openid: str, unionid: str | None = None) -> str:
        """A `wx.login` code for jscode2session: single use, valid five minutes."""
        self.app(appid)
        if not openid:
            raise ValueError("openid is required")
        self.users.setdefault((appid, openid), SimUser(unionid=unionid, following=False))
        code = "SIMCODE" + secrets.token_urlsafe(18)
        self.codes[code] = SimCode(appid, openid, unionid, issued_at=self.now())
        return code

    def inject_error(
        self,
        endpoint: str,
        errcode: int,
        errmsg: str = "injected error",
        *,
        times: int = 1,
        status: int = 200,
        delay: float = 0.0,
    ) -> None:
        """The next `times` calls to `endpoint` (e.g. "cgi-bin/message/custom/send") answer with this error.

        `status` >= 500 answers with that HTTP status and a non-JSON body instead. `delay`: the answer
        comes that many seconds late; with `errcode` 0 (and no 5xx `status`) the call itself succeeds —
        WeChat took it, its answer is slow (a caller can die waiting for it).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay must be within 0..{MAX_DELAY_SECONDS} seconds")
        queue = self.injected.setdefault(endpoint.strip("/"), deque())
        queue.extend(SimInjected(errcode, errmsg, status, delay) for _ in range(times))

    def expire_token(self, appid: str) -> None:
        """The current token expires now (42001 with it; the next stable_token mints a new one)."""
        app = self.app(appid)
        if app.token:
            self.tokens[app.token].expires_at = self.now() - 1
            app.token = None

    def invalidate_token(self, appid: str) -> None:
        """The current token becomes invalid (40001 with it; the next stable_token mints a new one)."""
        app = self.app(appid)
        if app.token:
            self.tokens[app.token].revoked = True
            app.token = None

    # -- inspection ----------------------------------------------------------------------------------------

    def records(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Requests received, oldest first: endpoint, method, query, body (parsed), raw, errcode, at."""
        if endpoint is None:
            return list(self.recorded)
        wanted = endpoint.strip("/")
        return [record for record in self.recorded if record["endpoint"] == wanted]

    def clear_records(self) -> None:
        self.recorded.clear()

    def force_refresh_count(self, appid: str | None = None) -> int:
        apps = [self.app(appid)] if appid else list(self.apps.values())
        return sum(len(app.force_refreshes) for app in apps)

    # -- used by the endpoints -----------------------------------------------------------------------------

    def _known_user(self, appid: str, openid: str) -> SimUser:
        self.app(appid)
        if (appid, openid) not in self.users:
            raise ValueError(f"unknown openid {openid!r} for {appid!r}: add it as a follower first")
        return self.users[(appid, openid)]

    def take_injected(self, endpoint: str) -> SimInjected | None:
        queue = self.injected.get(endpoint)
        return queue.popleft() if queue else None

    def authenticate(self, appid: str, secret: str) -> SimApp:
        app = self.apps.get(appid)
        if app is None:
            raise SimError(40013, "invalid appid")
        if not secrets.compare_digest(app.secret.encode(), secret.encode()):
            raise SimError(40125, "invalid appsecret")
        return app

    def token_for(self, app: SimApp, *, force_refresh: bool) -> tuple[str, int]:
        now = self.now()
        if force_refresh:
            recent = [at for at in app.force_refreshes if at > now - DAY]
            if len(recent) >= FORCE_REFRESH_PER_DAY:
                raise SimError(45009, "reach max api daily quota limit (force_refresh)")
            app.force_refreshes = [*recent, now]
            if app.token:
                self.tokens[app.token].revoked = True
                app.token = None
        current = self.tokens.get(app.token) if app.token else None
        if current is not None and current.expires_at - now > TOKEN_REFRESH_MARGIN:
            return app.token or "", int(current.expires_at - now)
        token = "SIMTOKEN_" + secrets.token_urlsafe(48)
        self.tokens[token] = SimToken(app.appid, expires_at=now + TOKEN_SECONDS)
        app.token = token
        return token, TOKEN_SECONDS

    def check_token(self, token: str | None) -> SimApp:
        if not token:
            raise SimError(41001, "access_token missing")
        known = self.tokens.get(token)
        if known is None or known.revoked:
            raise SimError(40001, "invalid credential, access_token is invalid or not latest")
        if known.expires_at <= self.now():
            raise SimError(42001, "access_token expired")
        return self.apps[known.appid]

    def rate_limit(self, endpoint: str, appid: str, per_minute: int) -> None:
        now = self.now()
        calls = self.calls.setdefault((endpoint, appid), deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= per_minute:
            raise SimError(45009, "reach max api minute quota limit")
        calls.append(now)

    def recipient(self, appid: str, openid: Any, *, must_follow: bool) -> str:
        """`openid` if it is a user of `appid` (and follows it, if `must_follow`); else 40003 or 43004."""
        user = self.users.get((appid, openid)) if isinstance(openid, str) else None
        if user is None:
            raise SimError(40003, "invalid openid")
        if must_follow and not user.following:
            raise SimError(43004, "require subscribe")
        return str(openid)

    def use_window(self, appid: str, openid: str) -> None:
        window = self.windows.get((appid, openid))
        if window is None or window.opened_at + WINDOW_SECONDS < self.now():
            raise SimError(45015, "response out of time limit or subscription is canceled")
        if window.sent >= WINDOW_QUOTA:
            raise SimError(45047, "out of response count limit")
        window.sent += 1

    def permanent_qrcodes(self, appid: str) -> int:
        """How many permanent QR codes `appid` has made."""
        return sum(
            1
            for qr in self.qrcodes.values()
            if qr["appid"] == appid and qr["action_name"] in ("QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE")
        )

    def live_media(self, appid: str, media_id: Any) -> SimMedia:
        """Media `appid` uploaded within the last three days, or 40007."""
        found = self.media.get(media_id) if isinstance(media_id, str) else None
        if found is None or found.appid != appid or found.created_at + MEDIA_SECONDS <= self.now():
            raise SimError(40007, "invalid media_id")
        return found

    def new_msgid(self) -> int:
        self.next_msgid += 1
        return self.next_msgid

    def redeem_code(self, appid: str, code: str) -> SimCode:
        found = self.codes.get(code)
        if found is None or found.appid != appid or found.issued_at + CODE_SECONDS < self.now():
            raise SimError(40029, "invalid code")
        if found.used:
            raise SimError(40163, "code been used")
        found.used = True
        return found
