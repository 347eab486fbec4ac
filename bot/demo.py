"""The demo merchant `make run` seeds into an empty database."""

from __future__ import annotations

import sys

from handlers.staff.accounts import create_staff
from handlers.staff.merchants import MerchantInput, create_merchant
from models.merchant import Merchant

DEMO = MerchantInput(
    slug="demo",
    name="演示咖啡",
    timezone="Asia/Shanghai",
    oa_appid="wxdemo0000000000a",
    oa_secret="demo-oa-secret",
    oa_token="memberbotdemo",
    oa_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    mp_appid="wxdemo0000000000b",
    mp_secret="demo-mp-secret",
)
DEMO_STAFF = (("cashier", "cashier"), ("manager", "manager"), ("admin", "admin"))
DEMO_PASSWORD = "memberbot-demo"  # printed for the local demo only


async def seed_demo(*, if_empty: bool) -> int:
    if if_empty and await Merchant.exists():
        print("memberbot: database already has merchants; demo not seeded", file=sys.stderr)
        return 0
    merchant = await create_merchant(DEMO, store_name="演示咖啡 人民广场店")
    for username, role in DEMO_STAFF:
        await create_staff(merchant, store_code="main", username=username, role=role, password=DEMO_PASSWORD)
    print(
        f"memberbot: seeded merchant 'demo' (OA {DEMO.oa_appid}, token {DEMO.oa_token}, AES key "
        f"{DEMO.oa_aes_key}; mini-program {DEMO.mp_appid}); staff cashier/manager/admin with password "
        f"{DEMO_PASSWORD}",
        file=sys.stderr,
    )
    return 0
