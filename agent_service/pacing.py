"""Budget pacing: the spend plan over a period, the pacing state the agent sees, the hard cap,
and the dual-variable pacer of Balseiro & Gur (2019).

Pure functions and small value objects, no I/O.

* **Plan.** How much of a period's budget may be spent by a given moment follows the traffic
  profile (share of the period's opportunities expected in each slot), so the budget is not
  spent in the first hours. :class:`SpendPlan` learns the profile from the opportunities seen
  (an exponential average per slot), starting uniform.
* **Pacing state.** :func:`pacing_features` turns the ledger and the last slot's outcome into
  the bid Q-network's input (``PACING_FEATURES`` documents each).
* **Hard cap.** :func:`cap_bid` never lets a bid exceed what is left of the budget; the store's
  atomic reservation (``DecideStore.reserve_and_put``) is the last line: ``spent + reserved`` can never
  pass the budget, whatever the agent does.
* **Dual pacing.** :class:`DualPacer`: bid = v / (1 + μ), μ ≥ 0 moved online by the gap between
  the slot's spend and its plan (a projected dual-gradient step; asymptotically optimal for a
  budget-constrained bidder in repeated second-price auctions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent_service.errors import ConfigError

__all__ = [
    "PACING_FEATURES",
    "DualPacer",
    "DualPacerConfig",
    "SlotOutcome",
    "SpendPlan",
    "paced_out",
    "pacing_features",
    "planned_fraction",
    "planned_spend",
]


def planned_fraction(elapsed: float, profile: Sequence[float] | np.ndarray | None = None) -> float:
    """Fraction of the budget the plan allows by ``elapsed`` (0..1) of the period.

    :param elapsed: fraction of the period elapsed.
    :param profile: expected traffic share per equal slot of the period (sums to 1), or None
        for a uniform plan.
    """
    elapsed = min(1.0, max(0.0, elapsed))
    if profile is None or len(profile) == 0:
        return elapsed
    pos = elapsed * len(profile)
    whole = int(pos)
    done = float(sum(profile[:whole]))
    if whole < len(profile):
        done += float(profile[whole]) * (pos - whole)
    return min(1.0, done / float(sum(profile)))


def planned_spend(budget_micros: int, elapsed: float, profile: Sequence[float] | np.ndarray | None = None) -> int:
    """Micros the plan allows to be spent by ``elapsed``."""
    return int(budget_micros * planned_fraction(elapsed, profile))


def paced_out(committed_micros: int, budget_micros: int, planned_micros: int, slack: float) -> bool:
    """True when spend (plus reservations) runs ahead of the plan (``planned_spend``, or
    ``SpendPlan.fraction`` × budget) by more than ``slack`` of the budget."""
    return committed_micros > planned_micros + slack * budget_micros


class SpendPlan:
    """A spend plan over a period of ``slots`` slots that follows the traffic profile.

    :param slots: slots per period (T).
    :param smoothing: weight of a new period's counts in the profile's exponential average.
    """

    def __init__(self, slots: int, smoothing: float = 0.3) -> None:
        if slots < 1:
            raise ConfigError("pacing.slots", "must be >= 1")
        self.slots = slots
        self.smoothing = smoothing
        self.profile = np.full(slots, 1.0 / slots)
        self._counts = np.zeros(slots)
        self._cum_of: np.ndarray | None = None
        self._cum = np.zeros(slots + 1)

    def observe(self, slot: int, opportunities: int) -> None:
        """Count the opportunities seen in ``slot`` of the current period."""
        self._counts[slot % self.slots] += opportunities

    def end_period(self) -> None:
        """Fold the period's counts into the profile."""
        total = self._counts.sum()
        if total > 0:
            self.profile = (1 - self.smoothing) * self.profile + self.smoothing * self._counts / total
            self.profile /= self.profile.sum()
        self._counts[:] = 0

    def fraction(self, elapsed: float) -> float:
        """Share of the budget planned to be spent by ``elapsed`` of the period.

        Same as ``planned_fraction(elapsed, self.profile)``, from cached cumulative shares (it
        runs for every impression on the bid path).
        """
        if self._cum_of is not self.profile:
            self._cum = np.concatenate(([0.0], np.cumsum(self.profile)))
            self._cum_of = self.profile
        pos = min(1.0, max(0.0, elapsed)) * self.slots
        whole = int(pos)
        done = float(self._cum[whole])
        if whole < self.slots:
            done += float(self.profile[whole]) * (pos - whole)
        return min(1.0, done / float(self._cum[-1]))

    def slot_share(self, slot: int) -> float:
        """Share of the budget planned for ``slot``."""
        return float(self.profile[slot % self.slots])


class SlotOutcome:
    """What happened in the last slot (inputs of the pacing features)."""

    __slots__ = ("bids", "wins", "spend_usd", "value_usd", "clearing_cpm_usd")

    def __init__(self, bids: int = 0, wins: int = 0, spend_usd: float = 0.0, value_usd: float = 0.0,
                 clearing_cpm_usd: float = 0.0) -> None:
        self.bids, self.wins, self.spend_usd = bids, wins, spend_usd
        self.value_usd, self.clearing_cpm_usd = value_usd, clearing_cpm_usd


PACING_FEATURES: tuple[tuple[str, str], ...] = (
    ("time_left", "fraction of the budget period still to come"),
    ("budget_left", "fraction of the budget not yet spent or reserved"),
    ("spend_vs_plan", "log(spent / planned spend by now), clipped to ±2, / 2"),
    ("slot_spend_vs_plan", "log(last slot's spend / its plan), clipped to ±2, / 2"),
    ("win_rate", "wins / bids in the last slot (0.5 when no bid)"),
    ("value_per_cost", "log(value won / cost in the last slot) / 3, clipped to ±1 — inverse cost per conversion"),
    ("competition", "mean clearing price of the last slot's wins, CPM USD / 10, capped at 1"),
    ("log_multiplier", "log bid multiplier z in force / 2"),
    ("slot_plan", "planned share of the budget for the coming slot × T / 2, capped at 1"),
)
"""Inputs of the bid Q-network, in order."""


def pacing_features(time_left: float, budget_left: float, spent_frac: float, plan_frac: float,
                    last: SlotOutcome, slot_plan_usd: float, log_multiplier: float,
                    next_slot_share: float, slots: int) -> np.ndarray:
    """The bid Q-network's state (``PACING_FEATURES``), float32 [P].

    :param time_left: fraction of the period still to come.
    :param budget_left: fraction of the budget left.
    :param spent_frac: fraction of the budget spent.
    :param plan_frac: fraction the plan allows by now.
    :param last: the last slot's outcome.
    :param slot_plan_usd: the last slot's planned spend.
    :param log_multiplier: z.
    :param next_slot_share: planned share of the budget for the coming slot.
    :param slots: T.
    """
    eps = 1e-6

    def lr(a: float, b: float) -> float:
        return float(np.clip(math.log((a + eps) / (b + eps)), -2.0, 2.0)) / 2

    win_rate = last.wins / last.bids if last.bids else 0.5
    vpc = float(np.clip(math.log((last.value_usd + eps) / (last.spend_usd + eps)) / 3, -1, 1)) if last.wins else 0.0
    return np.array([
        time_left, budget_left, lr(spent_frac, plan_frac), lr(last.spend_usd, slot_plan_usd), win_rate, vpc,
        min(1.0, last.clearing_cpm_usd / 10), log_multiplier / 2, min(1.0, next_slot_share * slots / 2),
    ], dtype=np.float32)


@dataclass(frozen=True)
class DualPacerConfig:
    """Adaptive pacing (Balseiro & Gur 2019) settings."""

    step: float = 0.1
    """ε: dual step per slot, applied to the relative gap (spend − plan) / plan."""
    mu_max: float = 20.0
    """Upper bound of μ (bids never fall below v / (1 + mu_max))."""
    mu0: float = 0.0
    """μ at the start (0 = truthful)."""
    mu_min: float = 0.0
    """Lower bound of μ. 0: a utility maximiser's dual — bids never exceed v. Below 0 (down to
    −1, exclusive): a value maximiser's — while it underspends, bids rise above v up to
    v / (1 + mu_min), which spends a budget an underestimated v would leave unspent."""
    reset_each_period: bool = False
    """Restart μ at mu0 every period (False: carry μ over, one long dual descent)."""

    def __post_init__(self) -> None:
        if self.step <= 0:
            raise ConfigError("dual.step", "must be > 0")
        if self.mu_max <= 0:
            raise ConfigError("dual.mu_max", "must be > 0")
        if not -1 < self.mu_min <= 0:
            raise ConfigError("dual.mu_min", "need -1 < mu_min <= 0")
        if not self.mu_min <= self.mu0 <= self.mu_max:
            raise ConfigError("dual.mu0", "need mu_min <= mu0 <= mu_max")


class DualPacer:
    """bid = v / (1 + μ); after each slot ``μ ← clip(μ + step · (spend − plan) / plan, mu_min, mu_max)``.

    Spending faster than planned raises μ (lower bids), slower lowers it, by default never below
    0: a utility-maximising bidder never bids above its value (``mu_min`` < 0: see the config).
    """

    def __init__(self, cfg: DualPacerConfig | None = None) -> None:
        self.cfg = cfg or DualPacerConfig()
        self.mu = self.cfg.mu0

    def start_period(self) -> None:
        if self.cfg.reset_each_period:
            self.mu = self.cfg.mu0

    def multiplier(self) -> float:
        """1 / (1 + μ): the factor applied to values."""
        return 1.0 / (1.0 + self.mu)

    def update(self, spend_usd: float, plan_usd: float) -> float:
        """Move μ after a slot; returns the new μ."""
        gap = min((spend_usd - plan_usd) / max(plan_usd, 1e-9), 5.0)
        self.mu = float(np.clip(self.mu + self.cfg.step * gap, self.cfg.mu_min, self.cfg.mu_max))
        return self.mu
