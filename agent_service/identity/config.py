"""Settings of identity resolution, in one frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent_service.errors import ConfigError

__all__ = ["IdentityConfig"]


@dataclass(frozen=True)
class IdentityConfig:
    """Thresholds and caps of the identity graph (both adapters read the same settings)."""

    merge_threshold: float = 0.9
    """A probabilistic link merges two persons only if its score is at least this (the service
    passes ``join.identity_min_score``; the defaults agree, a test keeps them so)."""
    max_component_nodes: int = 32
    """Largest person (devices + user keys); a merge that would exceed it is refused and logged."""
    max_ip_devices: int = 12
    """Devices one IP may be seen on before it counts as shared (carrier NAT, office, campus):
    its probabilistic links are then refused, and those already accepted are undone."""
    key_prefix: str = "gaelp:{id}:"
    """Redis key prefix; the hash tag keeps every identity key in one cluster slot (Lua scripts)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.merge_threshold) and 0.0 < self.merge_threshold <= 1.0):
            raise ConfigError("identity.merge_threshold", "must be in (0, 1], e.g. 0.9")
        if self.max_component_nodes < 2:
            raise ConfigError("identity.max_component_nodes", "must be >= 2 (a device and its user key)")
        if self.max_ip_devices < 2:
            raise ConfigError("identity.max_ip_devices", "must be >= 2 devices per IP")
        if not self.key_prefix:
            raise ConfigError("identity.key_prefix", "must not be empty")
