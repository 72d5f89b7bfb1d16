"""From a decision log to off-policy estimates: refusal of bad records, delayed rewards, the bid multiplier.

Three steps, each reported:

1. **Validation.** A record without a propensity, with one outside (0, 1], from a model version
   nobody knows, or with an action outside the evaluated space is *refused*, counted by reason
   (first failing reason, in that order), and never used.
2. **Delayed rewards.** Conversions arrive for 14 days after a decision. In ``closed_windows``
   mode only decisions whose window has closed by ``as_of`` and whose realised (final) reward
   is joined are used; the others are *deferred* and counted. In ``delay_corrected`` mode an
   open window's reward is what was realised so far plus the delay model's expected pending
   value (``Experience.parts.delayed``), which is unbiased only if that model is calibrated.
   The report says which mode produced the numbers.
3. **Estimation** (:func:`evaluate`): IPS, SNIPS and, with a reward model, DM, DR and
   Switch-DR from :mod:`agent_service.evaluation.ope`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent_service.config import JoinConfig
from agent_service.evaluation.ope import (
    CiMethod,
    Estimate,
    cell_mean_rewards,
    direct_method,
    doubly_robust,
    ips,
    snips,
    switch_dr,
)

__all__ = [
    "REFUSAL_REASONS",
    "WINDOW_MS",
    "JoinedOutcome",
    "LoggedDecision",
    "LoggedFeedback",
    "OPEReport",
    "RewardMode",
    "ValidationReport",
    "build_feedback",
    "evaluate",
    "refusals",
]

WINDOW_MS = JoinConfig().window_ms
"""The attribution window (``join.window_days``)."""
REFUSAL_REASONS = ("missing_propensity", "propensity_out_of_range", "unknown_model_version", "invalid_action")
RewardMode = Literal["closed_windows", "delay_corrected"]


@dataclass(frozen=True)
class LoggedDecision:
    """One logged decision as OPE reads it.

    :param decision_id: the decision's id (joins its outcome).
    :param event_time_ms: when it was decided. :param action: index in the evaluated action space.
    :param propensity: logging probability of ``action`` (None when the log lacks it).
    :param model_version: version that decided (None when unknown).
    :param cell: context cell for the reward model. :param position: list position (0 for one slot).
    """

    decision_id: str
    event_time_ms: int
    action: int
    propensity: float | None
    model_version: int | None
    cell: int = 0
    position: int = 0


@dataclass(frozen=True)
class JoinedOutcome:
    """A decision's reward as joined by the stream.

    :param reward: realised reward (the total when ``final``).
    :param final: the window closed and ``reward`` is final.
    :param window_close_ms: when the window closes (decision time + 14 days).
    :param pending_estimate: the delay model's expected value still to come (open windows).
    """

    decision_id: str
    reward: float
    final: bool
    window_close_ms: int
    pending_estimate: float = 0.0


@dataclass(frozen=True)
class ValidationReport:
    """What was used, refused (bad records) and deferred (rewards not yet known), and how."""

    n_records: int
    n_used: int
    refused: dict[str, int]
    deferred: dict[str, int]
    reward_mode: str
    as_of_ms: int | None
    imputed: dict[str, int] = field(default_factory=dict)
    """Used records whose reward was not joined but set (``no_outcome_reward``), by reason."""

    @property
    def n_refused(self) -> int:
        return sum(self.refused.values())

    def summary(self) -> str:
        parts = [f"{self.n_used}/{self.n_records} records used ({self.reward_mode})"]
        if self.refused:
            parts.append("refused: " + ", ".join(f"{k}={v}" for k, v in sorted(self.refused.items())))
        if self.deferred:
            parts.append("deferred: " + ", ".join(f"{k}={v}" for k, v in sorted(self.deferred.items())))
        if self.imputed:
            parts.append("reward set without an outcome: " + ", ".join(f"{k}={v}" for k, v in sorted(
                self.imputed.items())))
        return "; ".join(parts)


@dataclass(frozen=True)
class LoggedFeedback:
    """Aligned arrays of the used records (obp's bandit feedback, plus cells for the reward model)."""

    decision_ids: tuple[str, ...]
    reward: NDArray[np.float64]
    action: NDArray[np.intp]
    pscore: NDArray[np.float64]
    position: NDArray[np.intp]
    cell: NDArray[np.intp]
    report: ValidationReport


@dataclass(frozen=True)
class OPEReport:
    """Estimates of one candidate and the validation behind them."""

    candidate: str
    estimates: dict[str, Estimate]
    validation: ValidationReport
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "estimates": {k: asdict(e) for k, e in self.estimates.items()},
                "validation": asdict(self.validation), "notes": list(self.notes)}


# ---------------------------------------------------------------------------- validation
def refusals(propensity: ArrayLike, model_version: ArrayLike, known_versions: Collection[int],
             action: ArrayLike | None = None, n_actions: int | None = None) -> tuple[NDArray[np.bool_], Counter[str]]:
    """Which records may be used, and the count of refusals by (first failing) reason.

    :param propensity: [n] floats, NaN where missing. :param model_version: [n] ints, -1 where missing.
    :param known_versions: versions whose decisions are accepted.
    :param action: [n] action indices, checked against ``range(n_actions)`` when both are given.
    """
    p = np.asarray(propensity, dtype=np.float64)
    v = np.asarray(model_version, dtype=np.int64)
    reasons = [np.isnan(p), ~((p > 0) & (p <= 1)), ~np.isin(v, np.fromiter(known_versions, np.int64))]
    if action is not None and n_actions is not None:
        a = np.asarray(action, dtype=np.int64)
        reasons.append((a < 0) | (a >= n_actions))
    ok = np.ones(p.shape[0], dtype=bool)
    counts: Counter[str] = Counter()
    for name, bad in zip(REFUSAL_REASONS, reasons, strict=False):
        hit = ok & bad
        if hit.any():
            counts[name] = int(hit.sum())
        ok &= ~bad
    return ok, counts


def build_feedback(decisions: Sequence[LoggedDecision], outcomes: Mapping[str, JoinedOutcome], *,
                   known_versions: Collection[int], as_of_ms: int, n_actions: int,
                   mode: RewardMode = "closed_windows", window_ms: int = WINDOW_MS,
                   no_outcome_reward: float | None = None) -> LoggedFeedback:
    """Validated, reward-complete feedback arrays from logged decisions and their joined outcomes.

    :param decisions: the decision log. :param outcomes: joined outcomes by decision id.
    :param known_versions: model versions whose propensities are trusted.
    :param as_of_ms: evaluation time; only decisions made by then count.
    :param n_actions: size of the evaluated action space.
    :param mode: ``closed_windows`` (final rewards only) or ``delay_corrected`` (see the module docstring).
    :param window_ms: attribution window. :param no_outcome_reward: the reward of a decision whose
        window closed with no outcome joined (0.0 when the log is complete: a lost auction earns
        nothing); None defers such decisions instead.
    """
    if mode not in ("closed_windows", "delay_corrected"):
        raise ValueError(f"mode must be closed_windows or delay_corrected, got {mode!r}")
    decided = [d for d in decisions if d.event_time_ms <= as_of_ms]
    prop = [math.nan if d.propensity is None else d.propensity for d in decided]
    vers = [-1 if d.model_version is None else d.model_version for d in decided]
    ok, refused = refusals(prop, vers, known_versions, [d.action for d in decided], n_actions)
    deferred: Counter[str] = Counter()
    imputed: Counter[str] = Counter()
    if len(decided) < len(decisions):
        deferred["decided_after_as_of"] = len(decisions) - len(decided)
    used: list[tuple[LoggedDecision, float]] = []
    for d, good in zip(decided, ok, strict=True):
        if not good:
            continue
        out = outcomes.get(d.decision_id)
        closed = (out.window_close_ms if out is not None else d.event_time_ms + window_ms) <= as_of_ms
        if out is not None and out.final and closed:  # a final record from after as_of is not known at as_of
            used.append((d, out.reward))
        elif mode == "delay_corrected" and out is not None:
            used.append((d, out.reward + out.pending_estimate))
        elif out is None and no_outcome_reward is not None and (closed or mode == "delay_corrected"):
            # closed: nothing happened; open (delay-corrected): nothing joined and nothing pending
            used.append((d, no_outcome_reward))
            imputed["window_closed_no_outcome" if closed else "window_open_no_outcome"] += 1
        else:
            deferred["window_open" if not closed else "window_closed_without_final_outcome"] += 1
    report = ValidationReport(len(decisions), len(used), dict(refused), dict(deferred), mode, as_of_ms,
                              dict(imputed))
    return LoggedFeedback(
        decision_ids=tuple(d.decision_id for d, _ in used),
        reward=np.array([r for _, r in used], dtype=np.float64),
        action=np.array([d.action for d, _ in used], dtype=np.intp),
        pscore=np.array([d.propensity for d, _ in used], dtype=np.float64),
        position=np.array([d.position for d, _ in used], dtype=np.intp),
        cell=np.array([d.cell for d, _ in used], dtype=np.intp),
        report=report,
    )


# ---------------------------------------------------------------------------- the bid dimension
def evaluate(feedback: LoggedFeedback, action_dist: ArrayLike, *, candidate: str, n_cells: int | None = None,
             q_hat: ArrayLike | None = None, tau: float = 20.0, ci: CiMethod = "bootstrap", n_boot: int = 1000,
             seed: int = 0) -> OPEReport:
    """Every estimator on ``feedback`` for one candidate.

    :param action_dist: the candidate's probabilities on the used records ([n, A] or [n, A, L]).
    :param candidate: its name or version, for the report.
    :param n_cells: fit the cross-fitted cell-mean reward model over this many cells when
        ``q_hat`` is not given (None and no ``q_hat``: IPS and SNIPS only).
    :param q_hat: a reward model's estimates [n, A] or [n, A, L].
    :param tau: Switch-DR's weight threshold. :param ci: interval method. :param n_boot: resamples.
    :param seed: bootstrap and cross-fitting seed.
    """
    fb = feedback
    notes: list[str] = []
    if fb.reward.shape[0] == 0:
        return OPEReport(candidate, {}, fb.report, ("no usable record: nothing to estimate",))
    kw: dict[str, Any] = dict(ci=ci, n_boot=n_boot, seed=seed)
    d = np.asarray(action_dist, dtype=np.float64)
    est = {"ips": ips(fb.reward, fb.action, fb.pscore, d, fb.position, **kw),
           "snips": snips(fb.reward, fb.action, fb.pscore, d, fb.position, **kw)}
    if q_hat is None and n_cells is not None:
        q_hat = cell_mean_rewards(fb.cell, fb.action, fb.reward, n_cells, d.shape[1], seed=seed)
        notes.append(f"reward model: cross-fitted mean per (cell, action) over {n_cells} cells, from the log")
    if q_hat is not None:
        est["dm"] = direct_method(fb.reward, fb.action, fb.pscore, d, q_hat, fb.position, **kw)
        est["dr"] = doubly_robust(fb.reward, fb.action, fb.pscore, d, q_hat, fb.position, **kw)
        est["switch-dr"] = switch_dr(fb.reward, fb.action, fb.pscore, d, q_hat, fb.position, tau=tau, **kw)
    if fb.report.reward_mode == "delay_corrected":
        notes.append("open windows use the delay model's expected pending value (unbiased only if it is calibrated)")
    return OPEReport(candidate, est, fb.report, tuple(notes))
