"""A ``gaelp train`` checkpoint as the starting agent of a run (``[simulation] model``).

``gaelp train`` leaves ``agent.pt``: the learner's checkpoint (weights, optimisers, campaign
statistics, exploration schedule, labelled clicks, segment model) and the campaign's pacing
state (traffic profile, multiplier level). A run started from it publishes those weights as its
first registry version (:meth:`~agent_service.agent.learning.online.OnlineLearner.start_from`),
the decision path takes the pacing state (:meth:`~agent_service.agent.serving.server.AgentServer.restore_pacing`),
and both keep learning online as they would from fresh weights.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from agent_service.errors import ConfigError

__all__ = ["AGENT_FILE", "load_trained_agent"]

AGENT_FILE = "agent.pt"
"""The final checkpoint in a ``gaelp train --out`` directory."""


def load_trained_agent(path: str | Path, creatives: int | None = None) -> dict[str, Any]:
    """The checkpoint at ``path`` (a ``gaelp train --out`` directory or its agent.pt), checked to
    fit a policy of ``creatives`` slots (None: any; its layout is checked again when it is published).

    :raises ConfigError: no such file, not a ``gaelp train`` checkpoint, or another creative width.
    """
    file = Path(path) / AGENT_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigError("simulation.model", f"{file} not found (write one with `gaelp train --out DIR`)")
    try:
        ck = torch.load(file, weights_only=False)  # the user's own training output, as `gaelp evaluate` reads it
    except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError) as exc:
        raise ConfigError("simulation.model", f"{file} is not readable as a checkpoint: {exc}") from exc
    if not isinstance(ck, dict) or not {"net", "dims", "plan_profile"} <= ck.keys():
        raise ConfigError("simulation.model", f"{file} is not a `gaelp train` checkpoint (agent.pt)")
    trained = int(ck["dims"][2])  # net_dims: the policy's creative slots
    if creatives is not None and trained != creatives:
        raise ConfigError("creatives.capacity", f"{file} was trained with {trained} creative slots, the policy has "
                                                f"{creatives}: set [creatives] capacity = {trained}")
    return ck
