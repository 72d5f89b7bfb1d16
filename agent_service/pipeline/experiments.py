"""Creative A/B experiments on the live path (``[[experiments]]``; domain in ``agent_service.experiments.ab``).

- **Assignment.** A person (identity-resolved, so one person's devices stay together) is hashed
  into an arm of every running experiment; their decision follows the first running experiment
  in config order (run experiments that would share persons one after the other). The agent
  samples the creative from the arm's creatives only — the policy's creative probabilities are
  masked like the catalogue's eligibility (``creatives.restrict_to_arms``) and the arm's slots are
  logged in the state (``exp_slots_``), so the logged propensity is the one sampled and the learner
  replays the same mask. The state also carries the assignment and the arm's running value
  (``exp_in``, ``exp_control``, ``exp_arm_value``).
- **Results, exactly once.** A person's first bid under an experiment is their exposure
  (``expose:<exp>:<person>``), a won impression adds its price to the person's spend
  (``won:<exp>:<decision>``), a credited conversion its credit to their value
  (``credit:<exp>:<conv>:<decision>``); the store applies each key once (redelivery changes
  nothing) and keeps every arm's per-person sums (``ports.experiments``). The bidder counts each
  person's requests, no-bids and failed requests in memory and writes them with the next refresh,
  off the bid path, as one keyed batch (``req:<exp>:<flush>:<person>``; a failed write is retried
  with the same keys): the guardrails' denominators.
- **Statistics.** :meth:`LiveExperiments.refresh` reads the sums, runs the always-valid test and
  the guardrails (spend, no-bid and error rate per request against the control; a rolled-back
  arm's persons are then served the control) and exports the metrics;
  :meth:`LiveExperiments.flush` appends the sums' growth since the last flush to the warehouse's
  ``experiment_arms`` table, exactly once (a checkpoint in the store names the batch; one flusher).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from agent_service.agent.model.state import ArmInputs
from agent_service.config.experiments import ExperimentConfig
from agent_service.contracts.events import AuctionResult, Decision
from agent_service.creatives import Catalogue
from agent_service.errors import ConfigError
from agent_service.experiments.ab import Experiment, ExperimentStatus, ExperimentSummary, Exposure
from agent_service.experiments.guardrails import GuardrailStats
from agent_service.experiments.sequential import RatioStats
from agent_service.metrics import Metrics
from agent_service.pipeline.canary_tally import ERROR_REASONS
from agent_service.ports.experiments import ArmEffect, ArmRunning, ExperimentStore
from agent_service.units import DAY_S
from agent_service.warehouse.experiment_arms import write_arm_batch
from agent_service.warehouse.port import TransientWarehouseError, Warehouse

__all__ = ["LiveExperiments"]

_PRIOR_PERSONS = 20.0
"""Pseudo-persons at the experiment's mean value that shrink a young arm's value feature."""


_MAX_RUN_S = 400 * DAY_S
"""Longest run kept in the store's keys (a stop far in the future must not overflow Redis' expiry)."""
_SENT_CAP = 200_000
"""Exposure keys remembered per process (about 20 MB at most)."""


class _Catalogues(Protocol):
    def current(self, now_ms: int) -> Catalogue: ...


class LiveExperiments:
    """The running creative experiments of one process (see the module docstring).

    :param configs: the ``[[experiments]]``.
    :param store: running results.
    :param catalogue: creative ids → policy slots.
    :param metrics: exposures, status and per-arm estimates.
    :param window_days: attribution window (results of an experiment's persons are kept this long after its stop).
    """

    def __init__(self, configs: Sequence[ExperimentConfig], store: ExperimentStore, catalogue: _Catalogues,
                 metrics: Metrics, window_days: float = 14.0) -> None:
        self.experiments = [Experiment(c) for c in configs]
        self.store = store
        self.catalogue = catalogue
        self.metrics = metrics
        self._slack_s = int(window_days * DAY_S) + 2 * DAY_S
        self.refresh_every_s = 1.0
        """Least wall time between reads of the running results (0: every batch)."""
        self.timer: Callable[[], float] = time.monotonic
        self._refreshed = -1e18
        self._value: dict[tuple[str, str], float] = {}
        self._sent: dict[str, None] = {}
        """Exposure keys this process sent (bounded; the store's claim is what makes them count once)."""
        self._slots: dict[tuple[str, str], tuple[Catalogue, np.ndarray]] = {}
        self._requests: dict[tuple[str, str, str], list[int]] = {}
        """(experiment, arm, person) → [requests, no-bids, errors] decided since the last write."""
        self._unsent: list[ArmEffect] = []
        """Request counts of a write not yet acknowledged: retried as they are."""
        now = catalogue.current(0)
        for c in configs:
            for i, a in enumerate(c.arms):
                unknown = [cr for cr in a.creatives if cr not in now]
                if unknown:
                    raise ConfigError(f"experiments.{c.id}.arms[{i}].creatives",
                                      f"unknown creative ids {unknown}: not in the creative catalogue")

    # ---------------------------------------------------------------- assignment (bid path, no I/O)
    def assignment(self, person_id: str, t_ms: int) -> tuple[Experiment, int] | None:
        """The experiment and arm index deciding ``person_id``'s creatives at ``t_ms`` (None: none runs)."""
        for exp in self.experiments:
            if exp.status(t_ms) is ExperimentStatus.RUNNING:
                arm = exp.assign(person_id)
                return exp, exp.config.arms.index(arm)
        return None

    def arms(self, person_ids: Sequence[str], t_ms: np.ndarray, creatives: int) -> ArmInputs | None:
        """Each person's arm (``AgentServer.experiments``): its creative slots, control flag, running value."""
        B = len(person_ids)
        slots = np.zeros((B, creatives), bool)
        control = np.zeros(B, bool)
        value = np.ones(B)
        any_arm = False
        for b, (person, t) in enumerate(zip(person_ids, np.asarray(t_ms).tolist(), strict=True)):
            got = self.assignment(person, int(t))
            if got is None:
                continue
            exp, i = got
            arm = exp.config.arms[i].name
            slots[b] = self._arm_slots(exp, arm, int(t), creatives)
            control[b] = i == 0
            value[b] = self._value.get((exp.config.id, arm), 1.0)
            any_arm = True
        return ArmInputs(slots, control, value) if any_arm else None

    def _arm_slots(self, exp: Experiment, arm: str, t_ms: int, creatives: int) -> np.ndarray:
        cat = self.catalogue.current(t_ms)
        hit = self._slots.get((exp.config.id, arm))
        if hit is not None and hit[0] is cat and len(hit[1]) == creatives:
            return hit[1]
        mask = np.zeros(creatives, bool)
        for cr in next(a for a in exp.config.arms if a.name == arm).creatives:
            if cr in cat and cat.slot(cr) < creatives:  # a creative gone from a reloaded file is skipped
                mask[cat.slot(cr)] = True
        self._slots[(exp.config.id, arm)] = (cat, mask)
        return mask

    # ---------------------------------------------------------------- results (exactly once per key)
    async def decided(self, decisions: Iterable[Decision]) -> int:
        """Log the exposures of a decided batch: a person's first bid under a running experiment.

        :returns: first exposures counted now (a redelivered batch counts none).
        """
        effects, exposures = [], []
        for d in decisions:
            if d.shadow:
                continue
            got = self.assignment(d.person_id, d.event_time)
            if got is None:
                continue
            exp, i = got
            row = self._requests.setdefault((exp.config.id, exp.config.arms[i].name, d.person_id), [0, 0, 0])
            row[0] += 1
            if not d.bid:
                row[1] += 1
                row[2] += d.no_bid_reason in ERROR_REASONS
                continue
            key = f"expose:{exp.config.id}:{d.person_id}"
            if key in self._sent:  # this process logged it already: no store round trip on the bid path
                continue
            self._sent[key] = None
            arm = exp.config.arms[i]
            effects.append(ArmEffect(key, exp.config.id, arm.name, d.person_id, True))
            exposures.append(Exposure(exp.config.id, d.person_id, arm.name, arm.creatives, True, d.event_time))
        while len(self._sent) > _SENT_CAP:  # oldest first (dicts keep insertion order)
            del self._sent[next(iter(self._sent))]
        applied = await self._record(effects)
        for e, ok in zip(exposures, applied, strict=True):
            if ok:
                self.metrics.record_exposure(e)
        return sum(applied)

    async def results(self, items: Iterable[tuple[Decision, AuctionResult]]) -> None:
        """Add won impressions' prices to their persons' spend."""
        await self._record([e for dec, res in items if res.won
                            for e in self._effects(dec, f"won:{{}}:{dec.id}", spend=res.price_paid_micros / 1e6)])

    async def credited(self, items: Iterable[tuple[Decision, str, int]]) -> None:
        """Add credited conversion value (decision, conversion id, credited micros) to the persons' value."""
        await self._record([e for dec, conv, micros in items
                            for e in self._effects(dec, f"credit:{{}}:{conv}:{dec.id}", value=micros / 1e6)])

    def _effects(self, dec: Decision, key: str, spend: float = 0.0, value: float = 0.0) -> list[ArmEffect]:
        if dec.shadow:
            return []
        got = self.assignment(dec.person_id, dec.event_time)
        if got is None:
            return []
        exp, i = got
        return [ArmEffect(key.format(exp.config.id), exp.config.id, exp.config.arms[i].name, dec.person_id, False,
                          spend, value)]

    async def _record(self, effects: list[ArmEffect]) -> list[bool]:
        if not effects:
            return []
        stop = max(e.config.stop_ms for e in self.experiments)
        ttl = min(max(0, stop // 1000 - int(time.time())), _MAX_RUN_S) + self._slack_s
        return await self.store.record_arm_effects(effects, ttl)

    # ---------------------------------------------------------------- statistics, metrics, warehouse
    async def maybe_refresh(self, now_ms: int) -> list[ExperimentSummary] | None:
        """:meth:`refresh` when ``refresh_every_s`` has passed since the last one."""
        if self.timer() - self._refreshed < self.refresh_every_s:
            return None
        return await self.refresh(now_ms)

    async def refresh(self, now_ms: int) -> list[ExperimentSummary]:
        """Write the request counts, read every experiment's running results, update its decisions
        and export its metrics."""
        self._refreshed = self.timer()
        await self._write_requests()
        out = []
        for exp in self.experiments:
            totals = await self.store.arm_totals(exp.config.id)
            for i, arm in enumerate(exp.config.arms):
                got = totals.get(arm.name) or ArmRunning(0, RatioStats(), GuardrailStats())
                exp.stats[i], exp.guards[i], exp.exposed[i] = got.stats, got.guards, got.exposed
            summary = exp.evaluate(now_ms)
            self.metrics.record_experiment(summary)
            self._set_values(exp)
            out.append(summary)
        return out

    async def _write_requests(self) -> None:
        if not self._unsent and self._requests:
            flush = uuid.uuid4().hex
            self._unsent = [ArmEffect(f"req:{eid}:{flush}:{person}", eid, arm, person, False, requests=r, no_bids=n,
                                      errors=e) for (eid, arm, person), (r, n, e) in self._requests.items()]
            self._requests = {}
        if self._unsent:
            await self._record(self._unsent)
            self._unsent = []

    def _set_values(self, exp: Experiment) -> None:
        """Each arm's value per person over the experiment's, shrunk towards 1 while the arm is young."""
        n = sum(s.n for s in exp.stats)
        mean = sum(s.sum_x for s in exp.stats) / n if n else 0.0
        for arm, s in zip(exp.config.arms, exp.stats, strict=True):
            rel = (s.sum_x + _PRIOR_PERSONS * mean) / ((s.n + _PRIOR_PERSONS) * mean) if mean > 0 else 1.0
            self._value[(exp.config.id, arm.name)] = rel

    async def flush(self, warehouse: Warehouse, at_ms: int) -> int:
        """Append every experiment's growth since the last flush to ``experiment_arms``; rows sent.

        The growth is fixed in the store's checkpoint before it is written, so a flush retried after a
        crash writes the same batch id and the warehouse keeps it once."""
        rows = 0
        for exp in self.experiments:
            eid = exp.config.id
            raw = await self.store.flush_state(eid)
            ck: dict[str, Any] = json.loads(raw) if raw else {"batch": 0, "flushed": {}, "pending": None}
            while True:  # a batch left pending by a crash first, then the growth since
                if ck["pending"] is None:
                    now = {a: [r.exposed, *_fields(r.stats)] for a, r in (await self.store.arm_totals(eid)).items()}
                    if now == ck["flushed"]:
                        break
                    ck["pending"] = {"batch": ck["batch"] + 1, "at_ms": at_ms, "totals": now}
                    await self.store.set_flush_state(eid, json.dumps(ck).encode())
                rows += await self._write(warehouse, eid, ck)
                ck = {"batch": ck["pending"]["batch"], "flushed": ck["pending"]["totals"], "pending": None}
                await self.store.set_flush_state(eid, json.dumps(ck).encode())
        return rows

    @staticmethod
    async def _write(warehouse: Warehouse, eid: str, ck: dict[str, Any]) -> int:
        """Write the checkpoint's pending batch: its totals less the flushed ones, per arm."""
        pending = ck["pending"]
        stats, exposed = {}, {}
        for arm, tot in pending["totals"].items():
            old = ck["flushed"].get(arm, [0] * len(tot))
            d = [a - b for a, b in zip(tot, old, strict=True)]
            exposed[arm] = int(d[0])
            stats[arm] = RatioStats(int(d[1]), d[2], d[3], d[4], d[5], d[6], int(d[7]))
        out = await write_arm_batch(warehouse, eid, f"b{pending['batch']}", pending["at_ms"], stats, exposed)
        if not out.ok:  # the checkpoint keeps the batch: the next flush writes it again
            raise TransientWarehouseError(f"experiment '{eid}' batch {pending['batch']} not written: "
                                          f"retry {list(out.retry)}, rejected {out.rejected}")
        return len(stats)

def _fields(s: RatioStats) -> list[float]:
    return [s.n, s.sum_x, s.sum_y, s.sum_xx, s.sum_yy, s.sum_xy, s.n_pos]
