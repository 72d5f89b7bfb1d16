"""The canary port in memory (the embedded default and tests); see :mod:`agent_service.ports.canary`."""

from __future__ import annotations

from collections.abc import Sequence

from agent_service.ports.canary import ARMS, FIELDS, ArmSummary, ArmTally, ArmTotals, CanaryPlan

__all__ = ["MemoryCanaryStore"]


class MemoryCanaryStore:
    """Plan and tallies in dicts; ``summary`` reduces the per-person totals when asked (the Redis
    adapter keeps the sums up to date as tallies arrive instead)."""

    def __init__(self) -> None:
        self._plan: CanaryPlan | None = None
        self._applied: set[tuple[str, str]] = set()
        self._rows: dict[tuple[str, str], dict[str, list[int]]] = {}

    async def put_plan(self, plan: CanaryPlan) -> None:
        self._plan = plan

    async def plan(self) -> CanaryPlan | None:
        return self._plan

    async def add(self, experiment_id: str, batches: Sequence[tuple[str, Sequence[ArmTally]]]) -> list[bool]:
        out = []
        for key, tallies in batches:
            if (experiment_id, key) in self._applied:
                out.append(False)
                continue
            self._applied.add((experiment_id, key))
            for t in tallies:
                if t.arm not in ARMS:
                    raise ValueError(f"arm must be one of {ARMS}, got {t.arm!r}")
                row = self._rows.setdefault((experiment_id, t.arm), {}).setdefault(t.person_id, [0] * len(FIELDS))
                for j, f in enumerate(FIELDS):
                    row[j] += getattr(t, f)
            out.append(True)
        return out

    async def totals(self, experiment_id: str) -> dict[str, ArmTotals]:
        return {arm: ArmTotals.from_rows(self._rows.get((experiment_id, arm), {})) for arm in ARMS}

    async def summary(self, experiment_id: str) -> dict[str, ArmSummary]:
        t = await self.totals(experiment_id)
        cand = t["candidate"]
        return {"control": ArmSummary.of(t["control"].without(set(cand.persons))), "candidate": ArmSummary.of(cand)}
