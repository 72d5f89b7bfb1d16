"""One value per setting: where two settings classes describe the same thing, their defaults agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_service.agent.serving.hybrid import spec_of
from agent_service.config import GaelpConfig, load_config
from agent_service.config.agent import HybridConfig
from agent_service.delay.config import DelayModelConfig
from agent_service.errors import ConfigError
from agent_service.identity.config import IdentityConfig
from agent_service.pipeline.flow import stream_attribution
from agent_service.pipeline.identity_links import graph_config
from agent_service.runtime.warehouse_sink import batch_config
from agent_service.warehouse.batch import BatchConfig


def test_identity_defaults_are_the_services() -> None:
    cfg = GaelpConfig()
    assert IdentityConfig() == graph_config(cfg)  # the graph a library user builds is the one the service runs


def test_one_attribution_window() -> None:
    cfg = GaelpConfig()
    assert cfg.hybrid.window_days == cfg.join.window_days == cfg.attribution.window_days
    assert spec_of(cfg.hybrid, 4).window_days == cfg.join.window_days
    wider = cfg.replace("join", window_days=28.0, attribution="linear")
    assert spec_of(wider.hybrid, 4).window_days == 28.0
    assert wider.hybrid.delay_config().window_days == 28.0
    assert (wider.attribution.window_days, wider.attribution.model) == (28.0, "linear")
    assert cfg.replace("hybrid", window_days=28.0).hybrid.window_days == cfg.join.window_days  # the copy follows


def test_one_pair_of_bid_limits() -> None:
    """The agent prices within the limits the decision path clips to: ``[budget]``'s."""
    cfg = GaelpConfig().replace("budget", bid_min_usd=0.25, bid_max_usd=4.0)
    assert (cfg.hybrid.bid_min_usd, cfg.hybrid.bid_max_usd) == (0.25, 4.0)
    assert cfg.replace("hybrid", bid_max_usd=9.0).hybrid.bid_max_usd == 4.0  # the copy follows


@pytest.mark.parametrize(("table", "owner"), [("[hybrid]\nwindow_days = 7", "join.window_days"),
                                              ("[hybrid]\nbid_max_usd = 7", "budget.bid_max_usd"),
                                              ("[attribution]\nwindow_days = 7", "join.window_days"),
                                              ("[attribution]\nmodel = 'linear'", "join.attribution")])
def test_a_copy_is_refused_in_the_file(tmp_path: Path, table: str, owner: str) -> None:
    path = tmp_path / "gaelp.toml"
    path.write_text(table + "\n")
    with pytest.raises(ConfigError, match=owner):
        load_config(path)


def test_attribution_delay_and_batch_settings_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gaelp.toml"
    path.write_text("[attribution]\nhalf_life_days = 3.0\nprefer_clicks = true\n"
                    "[hybrid]\nconv_lr = 0.01\nconv_buffer_size = 1000\n"
                    "[warehouse]\nmax_delay_s = 0.5\nrecent_ids = 10\nretry_attempts = 3\n")
    cfg = load_config(path)
    assert (cfg.attribution.half_life_days, cfg.attribution.prefer_clicks) == (3.0, True)
    assert stream_attribution(cfg).attributor.config == cfg.attribution  # what the stream credits with
    delay = cfg.hybrid.delay_config()
    assert (delay.lr, delay.buffer_size) == (0.01, 1000)
    batch = batch_config(cfg.warehouse)
    assert (batch.max_delay_s, batch.recent_ids, batch.max_attempts) == (0.5, 10, 3)
    with pytest.raises(ConfigError, match="hybrid.conv_lr"):
        HybridConfig(conv_lr=0.0)


def test_library_defaults_are_the_services() -> None:
    cfg = GaelpConfig()
    assert cfg.warehouse.batch() == BatchConfig()
    lib, svc = DelayModelConfig(), cfg.hybrid.delay_config()
    assert (svc.lr, svc.beta1, svc.beta2, svc.l2, svc.buffer_size, svc.batch_size) == (
        lib.lr, lib.beta1, lib.beta2, lib.l2, lib.buffer_size, lib.batch_size)
