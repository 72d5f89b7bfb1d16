"""A shadow instance beside the live service, isolated from it (``gaelp serve --shadow``).

A shadow decides on live traffic and logs, never bids — and must not disturb the live service
either. What it changes in the configuration it is given:

- its own Redis keys (``serve.key_prefix`` + ``shadow:``; the identity graph's too): its journeys,
  budget ledger and decisions never mix with the live ones (decision ids are the same
  ``<request id>:<imp id>``: shared keys would collide);
- its own consumer group (``<group_id>-shadow``): it reads every record of the input topics
  instead of taking partitions away from the live stream workers;
- its own output topics (``<topic>.shadow`` for decisions, candidate decisions, experience and dead letters): nothing
  the live service, its learner or ``gaelp feed`` read;
- no budget: a shadow decision never reserves (``Decider`` with ``shadow``);
- no weights: it serves the live registry's versions and never publishes — the learner role is
  dropped unless ``serve.shadow_learn`` is set, and then it publishes to a lineage of its own
  (``registry_prefix`` + ``shadow:``, ``model_dir``/shadow).

The warehouse sink is dropped too (the live sink owns the warehouse); a sink for the shadow
topics can run as ``gaelp warehouse`` with this configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

from agent_service.config import GaelpConfig

__all__ = ["shadow_config", "shadow_roles"]

log = logging.getLogger(__name__)
_SUFFIX = "shadow"


def shadow_config(cfg: GaelpConfig) -> GaelpConfig:
    """The configuration of a shadow instance of ``cfg`` (unchanged when ``serve.shadow`` is off)."""
    if not cfg.serve.shadow:
        return cfg
    s, t = cfg.serve, cfg.topics
    out = cfg.replace("serve", key_prefix=f"{s.key_prefix}{_SUFFIX}:", group_id=f"{s.group_id}-{_SUFFIX}",
                      spill_dir=str(Path(s.spill_dir) / _SUFFIX))
    if s.shadow_learn:
        out = out.replace("serve", registry_prefix=f"{s.registry_prefix}{_SUFFIX}:",
                          model_dir=str(Path(s.model_dir) / _SUFFIX))
    out = out.replace("identity", key_prefix=f"{cfg.identity.key_prefix}{_SUFFIX}:")
    return out.replace("topics", decisions=f"{t.decisions}.{_SUFFIX}", experience=f"{t.experience}.{_SUFFIX}",
                       dead_letters=f"{t.dead_letters}.{_SUFFIX}",
                       candidate_decisions=f"{t.candidate_decisions}.{_SUFFIX}")


def shadow_roles(cfg: GaelpConfig, roles: Collection[str]) -> set[str]:
    """The roles a shadow instance runs of those asked: no sink, and no learner unless ``serve.shadow_learn``."""
    out = set(roles)
    if not cfg.serve.shadow:
        return out
    dropped = out & ({"sink"} if cfg.serve.shadow_learn else {"sink", "learner"})
    if dropped:
        log.info("shadow mode: not running %s (a shadow never publishes weights or writes the live warehouse)",
                 ", ".join(sorted(dropped)))
    return out - dropped
