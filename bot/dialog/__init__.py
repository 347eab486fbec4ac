"""The chat dialog engine: an intent router, multi-step dialogs with state in Redis, reply rendering."""

from __future__ import annotations

from bot.dialog.dispatcher import Dispatcher
from bot.dialog.router import Intent, Router
from bot.dialog.state import DialogState, DialogStore

__all__ = ["DialogState", "DialogStore", "Dispatcher", "Intent", "Router"]
