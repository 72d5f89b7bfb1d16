"""The CLI explains itself and configuration errors name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent_service.config import GaelpConfig, load_config
from agent_service.errors import ConfigError
from agent_service.typed_mapping import from_mapping


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "agent_service.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for cmd in ("simulate", "serve"):
        assert cmd in out
    out = subprocess.run([sys.executable, "-m", "agent_service.cli", "simulate", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--days" in out and "--seed" in out and "--out" in out


@pytest.mark.parametrize(("data", "key"), [
    ({"budget": {"daily_usd": "x"}}, "budget.daily_usd"),
    ({"budget": {"bid_min_usd": 20}}, "budget.bid_min_usd"),
    ({"hybrid": {"ppo": {"explore_eps": 1.5}}}, "hybrid.ppo.explore_eps"),
    ({"agent": {}}, "agent"),
    ({"nosuch": {}}, "nosuch"),
    ({"serve": {"redis": "http://x"}}, "serve.redis"),
    ({"serve": {"event_loop": "trio"}}, "serve.event_loop"),
    ({"serve": {"max_passes": 0}}, "serve.max_passes"),
    ({"serve": {"usd_per_unit": {"EUR": "1.1"}}}, "serve.usd_per_unit.EUR"),
    ({"serve": {"usd_per_unit": {"EUR": 0}}}, "serve.usd_per_unit.EUR"),
    ({"serve": {"usd_per_unit": {"euro": 1.1}}}, "serve.usd_per_unit.euro"),
    ({"serve": {"usd_per_unit": 1.1}}, "serve.usd_per_unit"),
])
def test_config_errors_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(GaelpConfig, data)
    assert err.value.key == key


def test_exchange_rates_are_a_toml_table() -> None:
    cfg = from_mapping(GaelpConfig, {"serve": {"usd_per_unit": {"EUR": 1.08, "GBP": 1}}})
    assert cfg.serve.usd_per_unit == {"EUR": 1.08, "GBP": 1.0} and GaelpConfig().serve.usd_per_unit == {}


def test_environment_overrides_and_bad_values() -> None:
    cfg = load_config(env={"GAELP_KAFKA": "k:1", "GAELP_REDIS": "redis://r:2/3", "GAELP_HTTP_PORT": "9"})
    assert (cfg.serve.kafka, cfg.serve.redis, cfg.serve.http_port) == ("k:1", "redis://r:2/3", 9)
    with pytest.raises(ConfigError) as err:
        load_config(env={"GAELP_HTTP_PORT": "eighty"})
    assert err.value.key == "GAELP_HTTP_PORT"


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_commands_run_on_the_configured_event_loop(kind: str) -> None:
    import asyncio

    from agent_service.runtime import event_loop

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert event_loop.run(which(), kind).startswith(kind)


def test_flags_come_from_the_settings_tree_and_a_toml_value_stands_unless_a_flag_is_given(tmp_path) -> None:
    import argparse

    from agent_service.commands.flags import add_flags, apply_flags

    p = argparse.ArgumentParser()
    add_flags(p, "train", ["days", "budget_usd", "runners"], rename={"budget_usd": "budget"})
    add_flags(p, "evaluate", ["seeds", "agent_learns"])
    helps = {a.option_strings[0]: a.help for a in p._actions if a.option_strings}
    assert "(default 60; [train] days)" in helps["--days"] and "budget periods" in helps["--days"].lower()
    assert "(default 0 1 2 3 4; [evaluate] seeds)" in helps["--seeds"]
    toml = tmp_path / "g.toml"
    toml.write_text("[train]\ndays = 7\nrunners = 2\n")
    base = load_config(toml)
    cfg = apply_flags(base, p.parse_args(["--runners", "0", "--seeds", "3", "4", "--no-agent-learns"]))
    assert (cfg.train.days, cfg.train.runners) == (7, 0)  # the file's days stand, the flag's runners win
    assert cfg.evaluate.seeds == (3, 4) and cfg.evaluate.agent_learns is False
    assert apply_flags(base, p.parse_args([])) == base
    with pytest.raises(ConfigError, match="train.days"):
        apply_flags(base, p.parse_args(["--days", "0"]))
