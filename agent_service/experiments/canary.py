"""The canary of ``gaelp promote --canary``: a candidate policy serves a stable hashed share of persons, an
always-valid test on conversion value per dollar decides, guardrails can roll it back at any time.

State machine (every transition, and every evaluation, is returned as a :class:`CanaryEvent`)::

    running ──(test: promote, stage has stage_min_persons)──► next ramp stage ──► … ──► promoted
       │ ├──(test: rollback, or a guardrail broken)──────────────────────────────────► rolled_back
       │ └──(horizon: max_persons or max_duration_ms with no decision)───────────────► held

``promoted``: everyone is served by the candidate. ``rolled_back``: everyone by control. ``held``: no
decision within the horizon; the share stays frozen until an operator acts. The three are terminal.

Assignment is nested across ramp stages (candidate iff bucket < share), so a person on the candidate stays
there when the share grows. Observations are per person (their totals over an observation window); the
caller closes windows when the stage changes so that no person is counted in both arms. The test pools the
stages: if value per dollar drifts in time while the share grows, the arms' mixes of early and late persons
differ and the pooled lift is biased (a stage-stratified estimate would remove that; not done yet).
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from agent_service.config.experiments import CanaryConfig
from agent_service.experiments.assignment import bucket
from agent_service.experiments.guardrails import GuardrailStats, check_guardrails
from agent_service.experiments.sequential import Arm, RatioStats, SequentialTest, TestResult, Verdict

__all__ = ["Canary", "CanaryEvent", "CanaryState"]


class CanaryState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class CanaryEvent:
    """One step of a canary, for the decision log and the metrics."""

    experiment_id: str
    seq: int
    """Increases by one per event of this canary."""
    at_ms: int
    """Event time of the evaluation."""
    kind: str
    """``started``, ``evaluated``, ``stage_advanced``, ``promoted``, ``rolled_back`` or ``held``."""
    state: CanaryState
    """State after the event."""
    stage: int
    share: float
    """Candidate share after the event."""
    reason: str
    lift: float
    lower: float
    upper: float
    control_persons: int
    candidate_persons: int
    control_conversions: int
    candidate_conversions: int

    def as_record(self) -> dict[str, Any]:
        """A flat dict for the log (the state as its string)."""
        rec = asdict(self)
        rec["state"] = str(self.state)
        return rec


class Canary:
    """One candidate against the live control.

    :param experiment_id: salts the person hash (a new id re-draws who sees the candidate).
    :param config: share, ramp, test, guardrails and horizon.
    """

    def __init__(self, experiment_id: str, config: CanaryConfig | None = None) -> None:
        if not experiment_id:
            raise ValueError("experiment_id must not be empty")
        self.experiment_id = experiment_id
        self.config = config or CanaryConfig()
        self.state = CanaryState.PENDING
        self.stage = 0
        self.test = SequentialTest(self.config.test)
        self.guards = {Arm.CONTROL: GuardrailStats(), Arm.CANDIDATE: GuardrailStats()}
        self._salt = f"canary:{experiment_id}"
        self._seq = 0
        self._start_ms = 0
        self._stage_start_persons = 0

    def restore(self, state: CanaryState, stage: int, seq: int, start_ms: int, stage_start_persons: int) -> None:
        """Continue a canary saved elsewhere (``gaelp promote`` keeps it in the canary store between steps).

        Observations are not restored: the caller observes every person's totals again, then evaluates.
        """
        if not 0 <= stage < len(self.config.stages):
            raise ValueError(f"stage {stage} outside the ramp's {len(self.config.stages)} stages")
        self.state, self.stage, self._seq = state, stage, seq
        self._start_ms, self._stage_start_persons = start_ms, stage_start_persons

    @property
    def seq(self) -> int:
        """Events of this canary so far."""
        return self._seq

    @property
    def start_ms(self) -> int:
        return self._start_ms

    @property
    def stage_start_persons(self) -> int:
        """Candidate persons observed when the current stage began."""
        return self._stage_start_persons

    # ---------------------------------------------------------------- assignment
    @property
    def share(self) -> float:
        """Share of persons the candidate serves now."""
        if self.state is CanaryState.PROMOTED:
            return 1.0
        if self.state in (CanaryState.ROLLED_BACK, CanaryState.PENDING):
            return 0.0
        return self.config.stages[self.stage]

    def arm_of(self, person_id: str) -> Arm:
        """The arm serving ``person_id`` (canonical id) now."""
        return Arm.CANDIDATE if bucket(person_id, self._salt) < self.share else Arm.CONTROL

    # ---------------------------------------------------------------- observations
    def observe(self, arm: Arm, value: float, spend: float, requests: int = 0, no_bids: int = 0,
                errors: int = 0) -> None:
        """One person's totals over a window: conversion value and spend (USD), bid requests, no-bids, errors."""
        self.test.observe(arm, value, spend)
        self.guards[Arm(arm)].add(requests, no_bids, errors, spend)

    def observe_many(self, arm: Arm, values: ArrayLike, spends: ArrayLike, requests: ArrayLike | None = None,
                     no_bids: ArrayLike | None = None, errors: ArrayLike | None = None) -> None:
        """Many persons of one arm (arrays with one entry per person; missing guardrail counts are 0)."""
        v = np.asarray(values, dtype=np.float64)
        s = np.asarray(spends, dtype=np.float64)
        if v.size and (v.min() < 0 or s.min() < 0):
            raise ValueError("values and spends must be >= 0")
        zero = np.zeros_like(v)
        self.test.observe_many(arm, v, s)
        self.guards[Arm(arm)].add_many(zero if requests is None else requests, zero if no_bids is None else no_bids,
                                       zero if errors is None else errors, s)

    def add_stats(self, arm: Arm, main: RatioStats, guards: GuardrailStats) -> None:
        """An arm's persons already reduced to their sums (value over spend; the guardrails' ratios)."""
        self.test.add_stats(arm, main)
        g = self.guards[Arm(arm)]
        g.spend.merge(guards.spend)
        g.no_bids.merge(guards.no_bids)
        g.errors.merge(guards.errors)

    # ---------------------------------------------------------------- state machine
    def start(self, now_ms: int) -> CanaryEvent:
        """Begin serving the candidate to the first share."""
        if self.state is not CanaryState.PENDING:
            raise RuntimeError(f"canary {self.experiment_id} already started ({self.state})")
        self.state, self._start_ms = CanaryState.RUNNING, now_ms
        return self._event(now_ms, "started", f"candidate on {self.share:.0%} of persons", self.test.result())

    def evaluate(self, now_ms: int) -> list[CanaryEvent]:
        """Read the test and the guardrails and move the state machine; every step is an event.

        :param now_ms: event time of the evaluation (for the duration horizon).
        :returns: ``evaluated`` and any transition; nothing once the canary has ended.
        """
        if self.state is CanaryState.PENDING:
            raise RuntimeError(f"canary {self.experiment_id} not started")
        if self.state is not CanaryState.RUNNING:
            return []
        res = self.test.result()
        events = [self._event(now_ms, "evaluated", str(res.decision), res)]
        if self.share >= 1.0:  # share 1 leaves no control to compare with
            return [*events, self._to(CanaryState.PROMOTED, now_ms, "share 1.0: everyone on the candidate", res)]
        breach = check_guardrails(self.guards[Arm.CONTROL], self.guards[Arm.CANDIDATE], self.config.guardrails)
        if breach is not None:
            reason = f"guardrail {breach.guardrail}: {breach.reason}"
            return [*events, self._to(CanaryState.ROLLED_BACK, now_ms, reason, res)]
        if res.decision is Verdict.ROLLBACK:
            reason = (f"value per dollar {res.lift:+.1%} (interval {res.lower:+.1%} .. {res.upper:+.1%}) "
                      f"below -{self.config.test.rollback_margin:.1%}")
            return [*events, self._to(CanaryState.ROLLED_BACK, now_ms, reason, res)]
        stage_persons = res.candidate_persons - self._stage_start_persons
        if res.decision is Verdict.PROMOTE and stage_persons >= self.config.stage_min_persons:
            why = f"value per dollar {res.lift:+.1%} (interval {res.lower:+.1%} .. {res.upper:+.1%}) above 0"
            if self.stage + 1 < len(self.config.stages) and self.config.stages[self.stage + 1] < 1.0:
                self.stage += 1
                self._stage_start_persons = res.candidate_persons
                return [*events, self._event(now_ms, "stage_advanced", f"{why}; share now {self.share:.0%}", res)]
            return [*events, self._to(CanaryState.PROMOTED, now_ms, why, res)]
        persons = res.control_persons + res.candidate_persons
        if persons >= self.config.max_persons or now_ms - self._start_ms >= self.config.max_duration_ms:
            reason = (f"no decision after {persons} persons and {(now_ms - self._start_ms) / 3.6e6:.1f} h; "
                      f"share frozen at {self.share:.0%}")
            return [*events, self._to(CanaryState.HELD, now_ms, reason, res)]
        return events

    # ---------------------------------------------------------------- plumbing
    def _to(self, state: CanaryState, now_ms: int, reason: str, res: TestResult) -> CanaryEvent:
        self.state = state
        return self._event(now_ms, str(state), reason, res)

    def _event(self, now_ms: int, kind: str, reason: str, res: TestResult) -> CanaryEvent:
        self._seq += 1
        lift = res.lift if math.isfinite(res.lift) else math.nan
        return CanaryEvent(self.experiment_id, self._seq, now_ms, kind, self.state, self.stage, self.share, reason,
                           lift, res.lower, res.upper, res.control_persons, res.candidate_persons,
                           res.control_conversions, res.candidate_conversions)
