"""In-memory :class:`~agent_service.ports.experiments.ExperimentStore` (tests and simulations).

Same semantics as the Redis adapter; keys never expire here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from agent_service.experiments.sequential import RatioStats
from agent_service.ports.experiments import ArmEffect, ArmRunning

__all__ = ["MemoryExperimentStore", "fold_effect"]


class _Person:
    __slots__ = ("arm", "exposed", "x", "y")

    def __init__(self, arm: str) -> None:
        self.arm, self.exposed, self.x, self.y = arm, False, 0.0, 0.0


def fold_effect(stats: RatioStats, x: float, y: float, dx: float, dy: float, new_person: bool) -> None:
    """Move an arm's per-person sums as one person's totals go from (x, y) to (x + dx, y + dy)."""
    nx, ny = x + dx, y + dy
    stats.n += new_person
    stats.sum_x += dx
    stats.sum_y += dy
    stats.sum_xx += nx * nx - x * x
    stats.sum_yy += ny * ny - y * y
    stats.sum_xy += nx * ny - x * y
    stats.n_pos += x <= 0 < nx


class MemoryExperimentStore:
    """See the module docstring."""

    def __init__(self) -> None:
        self._applied: set[str] = set()
        self._persons: dict[tuple[str, str], _Person] = {}
        self._arms: dict[str, dict[str, tuple[int, RatioStats]]] = {}
        self._flush: dict[str, bytes] = {}

    async def record_arm_effects(self, effects: Sequence[ArmEffect], ttl_s: int) -> list[bool]:
        out = []
        for e in effects:
            if e.key in self._applied:
                out.append(False)
                continue
            self._applied.add(e.key)
            person = self._persons.get((e.experiment, e.person_id))
            new = person is None
            if person is None:
                person = self._persons[(e.experiment, e.person_id)] = _Person(e.arm)
            arms = self._arms.setdefault(e.experiment, {})
            exposed, stats = arms.get(person.arm, (0, RatioStats()))
            if e.exposed and not person.exposed:
                person.exposed, exposed = True, exposed + 1
            fold_effect(stats, person.x, person.y, e.value_usd, e.spend_usd, new)
            person.x += e.value_usd
            person.y += e.spend_usd
            arms[person.arm] = (exposed, stats)
            out.append(True)
        return out

    async def arm_totals(self, experiment: str) -> dict[str, ArmRunning]:
        return {arm: ArmRunning(n, replace(s)) for arm, (n, s) in self._arms.get(experiment, {}).items()}

    async def flush_state(self, experiment: str) -> bytes | None:
        return self._flush.get(experiment)

    async def set_flush_state(self, experiment: str, state: bytes) -> None:
        self._flush[experiment] = state
