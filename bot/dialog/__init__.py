"""The chat dialog engine (being written)."""

from __future__ import annotations

from typing import Any

from handlers.chat import ChatReply, IncomingMessage
from models.merchant import Merchant


class Dispatcher:
    def __init__(self, **collaborators: Any) -> None:
        self.collaborators = collaborators

    async def dispatch(self, merchant: Merchant, message: IncomingMessage) -> ChatReply | None:
        raise NotImplementedError
