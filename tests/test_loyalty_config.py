"""Versioned loyalty configuration: defaults on first use, validated replacement, audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from handlers.core.errors import ValidationError
from handlers.loyalty import config as loyalty_config
from models.loyalty import AuditLog, RuleSetVersion
from tests.support.factories import make_merchant


async def test_first_read_writes_default_version_once_even_concurrently(client: Any) -> None:
    merchant = await make_merchant()
    results = await asyncio.gather(*(loyalty_config.current_rules(merchant.id) for _ in range(5)))
    assert {rules.version for rules in results} == {1}
    assert await RuleSetVersion.filter(merchant_id=merchant.id).count() == 1


async def test_saving_rules_makes_a_new_version_and_an_audit_row(client: Any) -> None:
    merchant = await make_merchant()
    await loyalty_config.current_rules(merchant.id)
    saved = await loyalty_config.save_rules(
        merchant.id, {"points_per_yuan": 2, "version": 99}, actor="staff:1"
    )
    assert saved.version == 2
    assert (await loyalty_config.current_rules(merchant.id)).points_per_yuan == 2
    assert (await loyalty_config.rules_version(merchant.id, 1)).points_per_yuan == 1
    assert await AuditLog.filter(merchant_id=merchant.id, action="rules.replace").count() == 1


async def test_invalid_rules_name_the_field_and_change_nothing(client: Any) -> None:
    merchant = await make_merchant()
    with pytest.raises(ValidationError) as caught:
        await loyalty_config.save_rules(merchant.id, {"points_per_yuan": -1}, actor="staff:1")
    assert caught.value.field == "points_per_yuan"
    assert await RuleSetVersion.filter(merchant_id=merchant.id).count() == 0


async def test_tiers_and_program_defaults_and_replacement(client: Any) -> None:
    merchant = await make_merchant()
    version, tiers = await loyalty_config.current_tiers(merchant.id)
    assert version == 1 and [t.code for t in tiers] == ["normal", "silver", "gold", "diamond"]
    version, tiers = await loyalty_config.save_tiers(
        merchant.id, [{"code": "basic", "name": "普通", "rank": 0}], actor="staff:1"
    )
    assert version == 2 and [t.code for t in tiers] == ["basic"]
    program = await loyalty_config.save_program(merchant.id, {"pending_days": 7}, actor="staff:1")
    assert (await loyalty_config.program(merchant.id)) == program
    assert program.pending_days == 7
    with pytest.raises(ValidationError):
        await loyalty_config.save_program(merchant.id, {"pending_days": 365}, actor="staff:1")
    assert (await loyalty_config.program(merchant.id)).pending_days == 7
