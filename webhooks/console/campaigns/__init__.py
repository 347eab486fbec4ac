"""Console pages of marketing: one-off campaigns (`pages`, their form per channel in `form`), triggered
journeys (`journeys`) and the merchant's marketing caps (`caps`). `routes` holds all of them."""

from __future__ import annotations

from aiohttp import web

from webhooks.console.campaigns import caps, journeys, pages

routes: list[web.AbstractRouteDef] = [*pages.routes, *journeys.routes, *caps.routes]
