"""gaelp serve's learner state file: a restart keeps the labelled clicks and optimiser, follows the
registry's weights, and survives a corrupt file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from agent_service.adapters.registry import FileRegistry
from agent_service.agent.serving.hybrid import n_conv_features
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig, PPOConfig
from agent_service.runtime.assembly import build_learner
from agent_service.runtime.learner_state import STATE_FILE, restore_state, write_state

HYB = HybridConfig(lstm_hidden=16, hidden=32, update_every=32, ppo=PPOConfig(rollout=64, minibatch=32, epochs=1))
CFG = dataclasses.replace(GaelpConfig(), hybrid=HYB)
T0 = 1_767_225_600_000


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.items())


def _trained(models: Path):
    """A learner with labelled clicks and moved weights, published as version 2."""
    learner = build_learner(CFG, FileRegistry(models), creatives=4, seed=0)
    inner = learner.learner
    d = n_conv_features(learner.spec)
    rng = np.random.default_rng(0)
    for i in range(50):
        inner.conv_learner.add_touch(f"dec-{i}", rng.random(d), T0 + 60_000 * i)
    for i in range(0, 50, 10):
        assert inner.conv_learner.add_conversion(f"dec-{i}", T0 + 60_000 * i + 86_400_000, f"conv-{i}")
    inner._now_ms = T0 + 5 * 86_400_000
    with torch.no_grad():
        for p in inner.net.parameters():
            p.add_(0.05)
    assert learner.publish() == 2
    return learner


def test_a_restart_resumes_the_labelled_clicks_and_the_served_weights(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = _trained(models)
    write_state(first.learner.checkpoint(), models / STATE_FILE)
    assert FileRegistry(models).versions() == [1, 2]  # the state file is not a model version

    plain = build_learner(CFG, FileRegistry(models), creatives=4, seed=1)
    assert plain.learner.conv_learner.labelled == 0  # what a restart without the file keeps

    again = build_learner(CFG, FileRegistry(models), creatives=4, seed=1)
    assert restore_state(again, models / STATE_FILE, FileRegistry(models))
    assert again.learner.conv_learner.labelled == 50
    x, _, converted, _ = again.learner.conv_learner.labels(T0 + 5 * 86_400_000)
    assert converted.sum() == 5
    assert again.learner.version == 2
    assert _same(again.learner.net.state_dict(), first.learner.net.state_dict())
    assert again.publish() == 3


def test_the_registry_wins_over_an_older_state_but_the_observations_are_kept(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = _trained(models)
    write_state(first.learner.checkpoint(), models / STATE_FILE)
    with torch.no_grad():  # a version published after the state was saved
        for p in first.learner.net.parameters():
            p.mul_(0.5)
    assert first.publish() == 3
    again = build_learner(CFG, FileRegistry(models), creatives=4, seed=1)
    assert restore_state(again, models / STATE_FILE, FileRegistry(models))
    assert again.learner.version == 3
    assert _same(again.learner.net.state_dict(), FileRegistry(models).load(3)["net"])
    assert again.learner.conv_learner.labelled == 50


def test_a_corrupt_state_file_is_ignored_and_the_served_model_stays(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _trained(models)
    (models / STATE_FILE).write_bytes(b"not a checkpoint")
    again = build_learner(CFG, FileRegistry(models), creatives=4, seed=1)
    assert not restore_state(again, models / STATE_FILE, FileRegistry(models))
    assert again.learner.version == 2
    assert _same(again.learner.net.state_dict(), FileRegistry(models).load(2)["net"])
    assert not restore_state(again, models / "absent.pt", FileRegistry(models))
