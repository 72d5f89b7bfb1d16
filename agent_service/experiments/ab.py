"""Creative A/B experiments: hashed assignment of persons to arms, exposure counted once per person, per-arm
running performance and the same always-valid statistics as the canary.

Every challenger arm is compared with the control (the first arm) on conversion value per dollar by
:func:`agent_service.experiments.sequential.compare`, at level ``alpha / (arms - 1)`` (Bonferroni: the
chance that any arm gets a wrong decision stays below ``alpha``). A challenger's decision is sticky: it is
``promote`` (surely better), ``rollback`` (surely worse, or a guardrail broken; the arm stops and its persons
are served the control) or still ``hold``. The experiment is ``decided`` once no challenger holds; the
winner is the promoted arm with the highest lift, else the control.

Storage of exposures, the per-arm sums and the listing of ``gaelp experiments`` live outside this module;
here :func:`is_first_exposure` takes the already-exposed set as an argument.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Container
from dataclasses import dataclass

from agent_service.config.experiments import ArmConfig, ExperimentConfig, SequentialConfig
from agent_service.experiments.assignment import bucket, pick_arm
from agent_service.experiments.guardrails import GuardrailStats, check_guardrails
from agent_service.experiments.sequential import RatioStats, TestResult, Verdict, compare

__all__ = [
    "ArmReport",
    "Experiment",
    "ExperimentStatus",
    "ExperimentSummary",
    "Exposure",
    "exposure_key",
    "is_first_exposure",
]


class ExperimentStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    """Before ``start_ms``."""
    RUNNING = "running"
    STOPPED = "stopped"
    """``stop_ms`` passed with some challenger still undecided."""
    DECIDED = "decided"
    """Every challenger is promoted or rolled back."""


def exposure_key(experiment_id: str, person_id: str) -> str:
    """Key of one person's exposure to one experiment in an exposed-set store."""
    return f"{experiment_id}:{person_id}"


def is_first_exposure(already_exposed: Container[str], experiment_id: str, person_id: str) -> bool:
    """Whether this exposure is the person's first in the experiment (the only one that is counted).

    :param already_exposed: keys (:func:`exposure_key`) of exposures already counted.
    :param experiment_id: the experiment.
    :param person_id: canonical person id.
    """
    return exposure_key(experiment_id, person_id) not in already_exposed


@dataclass(frozen=True, slots=True)
class Exposure:
    """A person shown an arm of a running experiment."""

    experiment_id: str
    person_id: str
    arm: str
    creatives: tuple[str, ...]
    first: bool
    """Counted (the person's first exposure in the experiment); the caller adds its key to the store."""
    at_ms: int


@dataclass(frozen=True, slots=True)
class ArmReport:
    """One arm's running performance; the lift and its interval are against the control."""

    name: str
    share: float
    exposed: int
    """Persons counted as exposed (first exposures)."""
    persons: int
    """Persons whose outcome was observed."""
    conversions: int
    value: float
    spend: float
    value_per_dollar: float
    lift: float
    lower: float
    upper: float
    decision: str
    """``control`` for the control, else promote / hold / rollback."""
    reason: str


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """A row of ``gaelp experiments``: status, winner and every arm's estimate."""

    id: str
    status: ExperimentStatus
    winner: str | None
    arms: tuple[ArmReport, ...]


class Experiment:
    """One creative experiment's assignment, exposure counting and statistics.

    :param config: arms, allocation, start/stop (event time, ms), test and guardrails.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self._salt = f"ab:{config.id}"
        self._index = {a.name: i for i, a in enumerate(config.arms)}
        n = len(config.arms)
        self.stats = [RatioStats() for _ in range(n)]
        self.guards = [GuardrailStats() for _ in range(n)]
        self.exposed = [0] * n
        self.decisions: list[Verdict] = [Verdict.HOLD] * n
        self.reasons = [""] * n
        # Bonferroni over the challengers keeps the experiment-wide error below alpha.
        self._test_cfg: SequentialConfig = dataclasses.replace(config.test, alpha=config.test.alpha / (n - 1))

    # ---------------------------------------------------------------- assignment and exposure
    def assign(self, person_id: str) -> ArmConfig:
        """The arm of ``person_id``: its hashed slice of the allocation; a rolled-back arm's persons get the control."""
        i = pick_arm(bucket(person_id, self._salt), self.config.shares)
        return self.config.arms[0 if self.decisions[i] is Verdict.ROLLBACK else i]

    def status(self, now_ms: int) -> ExperimentStatus:
        """Where the experiment stands at event time ``now_ms``."""
        if all(d is not Verdict.HOLD for d in self.decisions[1:]):
            return ExperimentStatus.DECIDED
        if now_ms < self.config.start_ms:
            return ExperimentStatus.SCHEDULED
        if now_ms >= self.config.stop_ms:
            return ExperimentStatus.STOPPED
        return ExperimentStatus.RUNNING

    def expose(self, person_id: str, now_ms: int, already_exposed: Container[str]) -> Exposure | None:
        """An impression for ``person_id`` under this experiment: its arm and whether it counts.

        :param person_id: canonical person id.
        :param now_ms: event time of the impression.
        :param already_exposed: exposure keys already counted (see :func:`exposure_key`).
        :returns: None when the experiment is not running (the caller serves its default or the winner).
        """
        if self.status(now_ms) is not ExperimentStatus.RUNNING:
            return None
        arm = self.assign(person_id)
        first = is_first_exposure(already_exposed, self.config.id, person_id)
        if first:
            self.exposed[self._index[arm.name]] += 1
        return Exposure(self.config.id, person_id, arm.name, arm.creatives, first, now_ms)

    # ---------------------------------------------------------------- outcomes and decisions
    def observe(self, arm: str, value: float, spend: float, requests: int = 0, no_bids: int = 0,
                errors: int = 0) -> None:
        """One exposed person's totals over the window: conversion value, spend (USD), requests, no-bids, errors."""
        if not (value >= 0 and spend >= 0):
            raise ValueError(f"value and spend must be >= 0, got {value}, {spend}")
        i = self._arm_index(arm)
        self.stats[i].add(value, spend)
        self.guards[i].add(requests, no_bids, errors, spend)

    def evaluate(self, now_ms: int) -> ExperimentSummary:
        """Update the challengers' decisions (while running) and summarise every arm."""
        running = self.status(now_ms) is ExperimentStatus.RUNNING
        results: list[TestResult | None] = [None]
        for i in range(1, len(self.stats)):
            res = compare(self.stats[0], self.stats[i], self._test_cfg)
            results.append(res)
            if not running or self.decisions[i] is not Verdict.HOLD:
                continue
            breach = check_guardrails(self.guards[0], self.guards[i], self.config.guardrails)
            if breach is not None:
                self.decisions[i], self.reasons[i] = Verdict.ROLLBACK, f"guardrail {breach.guardrail}: {breach.reason}"
            elif res.decision is not Verdict.HOLD:
                self.decisions[i] = res.decision
                self.reasons[i] = (f"value per dollar {res.lift:+.1%} "
                                   f"(interval {res.lower:+.1%} .. {res.upper:+.1%}) at {now_ms}")
        return ExperimentSummary(self.config.id, self.status(now_ms), self.winner(results),
                                 tuple(self._summary(i, r) for i, r in enumerate(results)))

    def winner(self, results: list[TestResult | None]) -> str | None:
        """The promoted arm with the highest lift, the control when every challenger lost, None while open."""
        if any(d is Verdict.HOLD for d in self.decisions[1:]):
            return None
        promoted = [(r.lift, i) for i, r in enumerate(results)
                    if r is not None and self.decisions[i] is Verdict.PROMOTE]
        return self.config.arms[max(promoted)[1] if promoted else 0].name

    # ---------------------------------------------------------------- plumbing
    def _arm_index(self, arm: str) -> int:
        try:
            return self._index[arm]
        except KeyError:
            raise ValueError(f"experiment '{self.config.id}' has no arm '{arm}'") from None

    def _summary(self, i: int, res: TestResult | None) -> ArmReport:
        a, s = self.config.arms[i], self.stats[i]
        if res is None:
            lift, lower, upper, decision = 0.0, 0.0, 0.0, "control"
        else:
            lift, lower, upper, decision = res.lift, res.lower, res.upper, str(self.decisions[i])
        vpd = s.ratio if s.sum_y > 0 else math.nan
        return ArmReport(a.name, self.config.shares[i], self.exposed[i], s.n, s.n_pos, s.sum_x, s.sum_y, vpd,
                          lift, lower, upper, decision, self.reasons[i])
