"""The simulator's user tags (`bot.wechat_sim.tags`): per app, its tags and their followers."""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_ID = 100  # WeChat's own tags are 0, 1 and 2; an account's start above them


@dataclass
class SimTag:
    id: int
    name: str
    openids: set[str] = field(default_factory=set)


@dataclass
class SimTags:
    """Per app: its tags by id."""

    by_app: dict[str, dict[int, SimTag]] = field(default_factory=dict)
    next_id: int = FIRST_ID

    def of(self, appid: str) -> dict[int, SimTag]:
        return self.by_app.setdefault(appid, {})

    def held_by(self, appid: str, openid: str) -> list[int]:
        return sorted(tag.id for tag in self.of(appid).values() if openid in tag.openids)
