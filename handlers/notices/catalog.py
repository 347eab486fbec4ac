"""Every notice a member can get: its default text, its WeChat template fields, whether it is urgent.

A notice's context is the data its event hands over (`sample` shows each kind's, and is what a
merchant's text or field mapping is checked against when saved). The default body is the text of a
customer-service message; template and subscribe fields map a WeChat keyword to a short jinja2
expression over the same context (each value is cut to one line of 20 characters when sent).
Urgent notices (receipts) go out at once; the others wait out the merchant's quiet hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class NoticeKind:
    code: str
    label: str  # what the merchant console calls it
    urgent: bool
    body: str  # default customer-service text (jinja2)
    fields: dict[str, str]  # default template/subscribe keyword → jinja2 expression
    sample: dict[str, Any] = field(default_factory=dict)


_MEMBER = {"member_name": "张三", "member_code": "K7M2Q9XP", "merchant_name": "街角咖啡"}


def _kind(
    code: str, label: str, body: str, fields: dict[str, str], sample: dict[str, Any], *, urgent: bool = False
) -> NoticeKind:
    return NoticeKind(code, label, urgent, body, fields, {**_MEMBER, **sample})


KINDS: dict[str, NoticeKind] = {
    kind.code: kind
    for kind in (
        _kind(
            "purchase_receipt",
            "消费小票",
            "【{{ merchant_name }}】消费 {{ amount }} 元{% if discount != '0.00' %}，优惠 {{ discount }} 元"
            "{% endif %}{% if coupon %}（已用券 {{ coupon }}）{% endif %}，实付 {{ paid }} 元"
            "{% if stored_value != '0.00' %}（储值支付 {{ stored_value }} 元）{% endif %}"
            "{% if credit is defined and credit != '0.00' %}（赊账 {{ credit }} 元，请按时还款）{% endif %}。"
            "{% if points %}"
            "获得 {{ points }} 积分{% if pending %}（退货期后到账）{% endif %}，{% endif %}当前积分 "
            "{{ balance }}。",
            {
                "amount1": "{{ paid }}元",
                "thing2": "{{ merchant_name }}",
                "number3": "{{ points }}",
                "number4": "{{ balance }}",
            },
            {
                "amount": "128.00",
                "discount": "6.40",
                "coupon": "满100减20",
                "paid": "101.60",
                "stored_value": "0.00",
                "credit": "0.00",
                "points": 101,
                "pending": False,
                "balance": 1381,
                "store": "人民广场店",
            },
            urgent=True,
        ),
        _kind(
            "points_credited",
            "积分到账",
            "【{{ merchant_name }}】{{ reason }}，获得 {{ points }} 积分，当前积分 {{ balance }}。",
            {"thing1": "{{ reason }}", "number2": "{{ points }}", "number3": "{{ balance }}"},
            {"reason": "连续签到 7 天奖励", "points": 50, "balance": 1330},
        ),
        _kind(
            "points_debited",
            "积分扣减",
            "【{{ merchant_name }}】{{ reason }}，扣减 {{ points }} 积分，当前积分 {{ balance }}。",
            {"thing1": "{{ reason }}", "number2": "{{ points }}", "number3": "{{ balance }}"},
            {"reason": "消费退款，扣回积分", "points": 101, "balance": 1229},
        ),
        _kind(
            "wallet_top_up",
            "储值到账",
            "【{{ merchant_name }}】充值 {{ amount }} 元{% if bonus != '0.00' %}，赠送 {{ bonus }} 元"
            "{% endif %}，储值余额 {{ balance }} 元。",
            {"amount1": "{{ amount }}元", "amount2": "{{ bonus }}元", "amount3": "{{ balance }}元"},
            {"amount": "100.00", "bonus": "20.00", "balance": "120.00"},
            urgent=True,
        ),
        _kind(
            "wallet_changed",
            "储值变动",
            "【{{ merchant_name }}】{{ reason }}：{{ change }} 元，储值余额 {{ balance }} 元。",
            {"thing1": "{{ reason }}", "amount2": "{{ change }}元", "amount3": "{{ balance }}元"},
            {"reason": "退还本金", "change": "-50.00", "balance": "70.00"},
            urgent=True,
        ),
        _kind(
            "tier_upgraded",
            "等级提升",
            "【{{ merchant_name }}】恭喜升级为{{ tier }}！{% if benefits %}专享：{{ benefits }}。{% endif %}"
            "{% if gift_points %}升级礼 {{ gift_points }} 积分已到账。{% endif %}",
            {"thing1": "{{ tier }}", "thing2": "{{ benefits }}"},
            {"tier": "银卡", "benefits": "消费享 9.5 折、积分 1.5 倍", "gift_points": 200},
        ),
        _kind(
            "tier_downgrade_warning",
            "保级提醒",
            "【{{ merchant_name }}】您的{{ tier }}将于 {{ review_date }} 复核，"
            "{{ progress }}，别错过保级哦。",
            {"thing1": "{{ tier }}", "time2": "{{ review_date }}", "thing3": "{{ progress }}"},
            {"tier": "银卡", "review_date": "2027-01-15", "progress": "再消费 200.00 元即可保级"},
        ),
        _kind(
            "points_expiring",
            "积分到期提醒",
            "【{{ merchant_name }}】您有 {{ points }} 积分将于 {{ expires_on }} 到期，请尽快在积分商城使用。",
            {"number1": "{{ points }}", "time2": "{{ expires_on }}", "thing3": "积分商城兑换好礼"},
            {"points": 200, "expires_on": "2026-12-31"},
        ),
        _kind(
            "coupon_expiring",
            "优惠券到期提醒",
            "【{{ merchant_name }}】您的优惠券「{{ coupon }}」将于 {{ expires_on }} 到期，结账时出示券码 "
            "{{ code }} 即可使用。",
            {"thing1": "{{ coupon }}", "time2": "{{ expires_on }}"},
            {"coupon": "满100减20", "code": "C8H3K2QW", "expires_on": "2026-12-07"},
        ),
        _kind(
            "pickup_ready",
            "提货通知",
            "【{{ merchant_name }}】您兑换的{{ item }}已备好，请于 {{ deadline }} 前到店出示提货码 {{ code }}"
            "。",
            {"thing1": "{{ item }}", "character_string2": "{{ code }}", "time3": "{{ deadline }}"},
            {"item": "拿铁一杯", "code": "583920", "deadline": "2026-12-11 21:00"},
        ),
        _kind(
            "order_shipped",
            "发货通知",
            "【{{ merchant_name }}】您兑换的{{ item }}已发货，{{ carrier }} 运单号 {{ tracking_no }}。",
            {"thing1": "{{ item }}", "thing2": "{{ carrier }}", "character_string3": "{{ tracking_no }}"},
            {"item": "保温杯", "carrier": "顺丰", "tracking_no": "SF1234567890"},
        ),
        _kind(
            "pickup_deadline",
            "提货截止提醒",
            "【{{ merchant_name }}】您兑换的{{ item }}明天（{{ deadline }}）截止提货，提货码 {{ code }}，"
            "逾期将退回积分。",
            {"thing1": "{{ item }}", "character_string2": "{{ code }}", "time3": "{{ deadline }}"},
            {"item": "拿铁一杯", "code": "583920", "deadline": "2026-12-11 21:00"},
        ),
        _kind(
            "group_filled",
            "拼团成功",
            "【{{ merchant_name }}】您参与的「{{ item }}」拼团已成团，{% if code %}提货码 {{ code }}。"
            "{% else %}请留意发货通知。{% endif %}",
            {"thing1": "{{ item }}", "thing2": "拼团成功"},
            {"item": "双人下午茶", "code": "771204"},
        ),
        _kind(
            "group_refunded",
            "拼团未成退款",
            "【{{ merchant_name }}】很遗憾，「{{ item }}」拼团未在时限内成团，{{ points }} 积分已退回。",
            {"thing1": "{{ item }}", "number2": "{{ points }}"},
            {"item": "双人下午茶", "points": 600},
        ),
        _kind(
            "flash_confirmed",
            "秒杀成功",
            "【{{ merchant_name }}】抢购成功！{{ item }} × {{ qty }}，{% if code %}提货码 {{ code }}，请于 "
            "{{ deadline }} 前到店提货。{% else %}我们会尽快为您发货。{% endif %}",
            {"thing1": "{{ item }}", "number2": "{{ qty }}", "character_string3": "{{ code }}"},
            {"item": "限量马克杯", "qty": 1, "code": "905113", "deadline": "2026-12-11 21:00"},
            urgent=True,
        ),
        _kind(
            "birthday_greeting",
            "生日祝福",
            "【{{ merchant_name }}】{{ member_name or '亲爱的会员' }}，生日快乐！"
            "{% if gift_points %}生日礼 {{ gift_points }} 积分已到账{% endif %}"
            "{% if gift_coupons %}{% if gift_points %}，{% endif %}另有{{ gift_coupons }}送上{% endif %}"
            "{% if gift_points or gift_coupons %}。{% endif %}愿您天天开心！",
            {"thing1": "生日快乐", "thing2": "{{ gift }}"},
            {"gift_points": 300, "gift_coupons": "生日蛋糕券", "gift": "300 积分、生日蛋糕券"},
        ),
    )
}
