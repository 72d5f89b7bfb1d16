"""Cross-device identity resolution: which devices are the same person, and how sure we are.

- :class:`GraphLink` in, :class:`Resolution` (person id, confidence, device count) out;
- the port :class:`IdentityGraph` with two adapters, :class:`InMemoryIdentityGraph` and
  :class:`RedisIdentityGraph` (Lua, pipelined), giving identical results;
- :func:`evaluate_identity`: pairwise precision / recall / F1 against ground truth;
- :func:`generate_identity_world`: a seeded synthetic world for tests and benches.
"""

from agent_service.identity.config import IdentityConfig
from agent_service.identity.memory import InMemoryIdentityGraph
from agent_service.identity.model import (
    ACCEPTED,
    DETERMINISTIC_KINDS,
    KINDS,
    PROBABILISTIC_KINDS,
    GraphLink,
    IdentityScore,
    LinkStatus,
    Resolution,
    evaluate_identity,
    max_product_confidence,
)
from agent_service.identity.port import IdentityGraph
from agent_service.identity.synthetic import IdentityWorld, generate_identity_world

__all__ = [
    "ACCEPTED",
    "DETERMINISTIC_KINDS",
    "KINDS",
    "PROBABILISTIC_KINDS",
    "GraphLink",
    "IdentityConfig",
    "IdentityGraph",
    "IdentityScore",
    "IdentityWorld",
    "InMemoryIdentityGraph",
    "LinkStatus",
    "Resolution",
    "evaluate_identity",
    "generate_identity_world",
    "max_product_confidence",
]
