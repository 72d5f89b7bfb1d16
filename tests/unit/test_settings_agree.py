"""One value per setting: where two settings classes describe the same thing, their defaults agree."""

from __future__ import annotations

from agent_service.agent.serving.hybrid import spec_of
from agent_service.config import GaelpConfig
from agent_service.identity.config import IdentityConfig
from agent_service.pipeline.identity_links import graph_config


def test_identity_defaults_are_the_services() -> None:
    cfg = GaelpConfig()
    assert IdentityConfig() == graph_config(cfg)  # the graph a library user builds is the one the service runs


def test_one_attribution_window() -> None:
    cfg = GaelpConfig()
    assert cfg.hybrid.window_days == cfg.join.window_days
    assert spec_of(cfg.hybrid, 4).window_days == cfg.join.window_days
    wider = cfg.replace("hybrid", window_days=28.0)
    assert spec_of(wider.hybrid, 4).window_days == 28.0
