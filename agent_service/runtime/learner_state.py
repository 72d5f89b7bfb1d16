"""The serve learner's state on disk: what a restart would otherwise lose.

The registry holds only what serves (weights, the conversion model, campaign statistics). A
learner restarted from it alone starts with empty optimiser moments and, worse, no labelled
clicks: the conversion estimate blends the model with its prior by matured evidence, so it falls
back towards the prior rate until days of new clicks mature (on the simulator this was the
largest single loss of a restored learner). The state file keeps the learner's checkpoint
(``HybridLearner.checkpoint``: optimisers, statistics, the labelled clicks as frozen evidence).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from agent_service.agent.learning.online import OnlineLearner
from agent_service.errors import ModelError
from agent_service.ports.registry import ModelRegistry

__all__ = ["STATE_FILE", "restore_state", "write_state"]

log = logging.getLogger(__name__)

STATE_FILE = "learner-state.pt"
"""File name in the model directory (outside the registry's ``v*.pt`` versions)."""


def write_state(state: dict[str, Any], path: Path) -> None:
    """Write a learner checkpoint (``HybridLearner.checkpoint()``, taken on the learner's thread)
    atomically: a crash mid-write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def restore_state(learner: OnlineLearner, path: Path, registry: ModelRegistry) -> bool:
    """Resume ``learner`` from the state file if there is a usable one; True if it was used.

    Weights follow the registry: when its newest version is not the one the state was saved at
    (a rollback or a crash after a publish), the learner adopts that version's weights and keeps
    the state's observations. A corrupt or mismatched file is logged and ignored: the learner
    resumes from the registry's newest version.
    """
    if not path.exists():
        return False
    try:
        ck = torch.load(path, weights_only=False)  # our own file, written by write_state
        learner.learner.load_checkpoint(ck)
    except (ModelError, KeyError, ValueError, RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        log.warning("ignoring the learner state %s: %s", path, exc)
        if registry.latest_version():  # a load that failed half-way: back to the served model
            learner.resume(registry.latest_version())
        return False
    latest = registry.latest_version()
    if latest and latest != learner.learner.version:
        learner.adopt(latest)
    log.info("learner resumed from %s (version %d, %d labelled clicks)", path, learner.learner.version,
             learner.learner.conv_learner.labelled)
    return True
