from __future__ import annotations

import pytest

from handlers.rules.errors import RuleError
from handlers.rules.expiry import YearlyClearance
from handlers.rules.program import Program, program_to_dict, validate_program


def test_defaults_round_trip() -> None:
    assert validate_program(program_to_dict(Program())) == Program()


def test_partial_settings_fill_documented_defaults() -> None:
    program = validate_program(
        {
            "expiry": {"kind": "yearly_clearance", "month": 12, "day": 31},
            "referral": {"level_points": [200, 50, 10]},
        }
    )
    assert program.expiry == YearlyClearance(12, 31)
    assert program.referral.level_points == (200, 50, 10)
    assert program.referral.trigger == "first_purchase"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"pending_days": -1}, "pending_days"),
        ({"offset": {"max_percent": 0}}, "offset.max_percent"),
        ({"referral": {"level_points": [1, 2, 3, 4, 5, 6]}}, "referral.level_points"),
        ({"referral": {"trigger": "scan"}}, "referral.trigger"),
        ({"checkin": {"daily_points": -5}}, "checkin.daily_points"),
        ({"expiry": {"kind": "rolling_months", "months": 0}}, "expiry.months"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_settings_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(RuleError) as caught:
        validate_program(raw)
    assert caught.value.field == field
