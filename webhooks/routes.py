"""Every route memberbot serves."""

from __future__ import annotations

from aiohttp import web

from webhooks import (
    admin,
    admin_analytics,
    admin_campaigns,
    admin_loyalty,
    admin_mall,
    admin_member_page,
    admin_members,
    admin_menu,
    admin_products,
    admin_segments,
    admin_staff,
    admin_stores,
    admin_tags,
    api,
    coupons,
    credit,
    invites,
    mall,
    mall_deals,
    member_import,
    mp,
    mp_loyalty,
    notices,
    openapi,
    pages,
    service_cards,
    staff,
    till,
    wallet,
)
from webhooks.console import setup as setup_console
from webhooks.wechat import callback


def setup_routes(app: web.Application) -> None:
    api.mount(
        app,
        openapi.routes,
        mp.routes,
        mp_loyalty.routes,
        staff.routes,
        till.routes,
        admin.routes,
        admin_loyalty.routes,
        coupons.routes,
        mall.routes,
        admin_mall.routes,
        service_cards.routes,
        wallet.routes,
        mall_deals.routes,
        notices.routes,
        admin_stores.routes,
        admin_staff.routes,
        admin_products.routes,
        invites.routes,
        member_import.routes,
        admin_menu.routes,
        admin_members.routes,  # before the page: /api/admin/members/export is not a member id
        admin_member_page.routes,
        credit.routes,
        admin_tags.routes,
        admin_segments.routes,
        admin_analytics.routes,
        admin_campaigns.routes,
    )
    callback.setup(app)
    pages.setup(app)
    setup_console(app)
