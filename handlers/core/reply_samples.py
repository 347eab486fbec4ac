"""What each chat reply template is given, as sample data: an override is rendered against it when
saved, so one that uses a name it is not given (`{{ self.__init__.__globals__ }}`, a typo) is refused
then instead of blanking the reply later. `merchant_name` is given to every reply."""

from __future__ import annotations

from typing import Any

_CODE = "K7M2Q9XP"
_CHECKIN = {"points": 15, "bonus": 10, "streak": 7, "balance": 1280, "next_days": 3, "next_points": 50}

SAMPLES: dict[str, dict[str, Any]] = {
    "already_registered": {"code": _CODE},
    "ask_birthday": {},
    "ask_gender": {},
    "ask_phone": {},
    "ask_phone_code": {"phone": "139****5678"},
    "cancelled": {},
    "card_link": {"code": _CODE, "minutes": 10},
    "checkin_already": dict(_CHECKIN, points=0, bonus=0),
    "checkin_done": dict(_CHECKIN),
    "coupons": {
        "coupons": [
            {"name": "满100减20", "description": "满 100 元减 20 元", "code": "C8H3K2", "until": "2027-01-31"}
        ],
        "more": 2,
    },
    "help": {"in_dialog": False},
    "invite_link": {"url": "https://example.com/invite/demo?t=1.1767225600.sig", "expires": "2027-01-31"},
    "invite_unavailable": {"reason": "not_member"},
    "invalid_answer": {"reason": "手机号应为 11 位数字", "step": "phone"},
    "mall_items": {
        "items": [
            {
                "name": "拿铁一杯",
                "points": 300,
                "cash": "",
                "sold_out": False,
                "eligible": True,
                "limit_reached": False,
            },
            {
                "name": "保温杯",
                "points": 900,
                "cash": "9.90",
                "sold_out": True,
                "eligible": True,
                "limit_reached": False,
            },
        ],
        "balance": 1280,
    },
    "mall_orders": {
        "orders": [
            {
                "name": "拿铁一杯",
                "qty": 1,
                "status": "待提货",
                "code": "583920",
                "deadline": "12-31 21:00",
                "cash": "",
            }
        ]
    },
    "me": {
        "code": _CODE,
        "member_name": "张三",
        "phone": "138****8000",
        "birthday": "1990-05-20",
        "gender": "female",
        "profile_completed": True,
    },
    "member_blocked": {},
    "nothing_to_cancel": {},
    "sms_unsubscribed": {},
    "points_summary": {
        "balance": 1280,
        "pending": 60,
        "expiring": 200,
        "expiring_date": "2027-01-31",
        "recent": [{"when": "12-04 10:21", "label": "消费", "delta": "+45"}],
    },
    "phone_code_wrong": {},
    "phone_linked": {"code": _CODE, "then": "请回复您的生日，例如 1990-05-20。"},
    "phone_not_linked": {"outcome": "taken", "then": "请回复您的生日，例如 1990-05-20。"},
    "profile_done": {"code": _CODE},
    "scan": {"code": _CODE, "profile_completed": False},
    "tier_info": {
        "tier_name": "银卡",
        "benefits": ["消费享 9.5 折", "消费积分 1.5 倍"],
        "progress": "再消费 200.00 元升级金卡",
        "purchasable": [{"name": "金卡", "cost": 1000}],
    },
    "unsupported_message": {"kind": "image"},
    "wallet_balance": {
        "total": "120.00",
        "principal": "100.00",
        "bonus": "20.00",
        "has_balance": True,
        "cards": [{"name": "洗剪吹5次卡", "count": True, "uses_left": 3, "valid_until": "2027-06-30"}],
    },
    "welcome": {"code": _CODE, "created": True, "restored": False, "profile_completed": False},
}
