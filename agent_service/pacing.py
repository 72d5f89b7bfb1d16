"""Budget pacing: how much of a period's budget may be spent by a given moment.

Pure functions. The plan follows a traffic profile (fraction of the period's opportunities
expected by each slot; uniform by default) so the budget is not spent in the first hours.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["planned_fraction", "planned_spend", "paced_out"]


def planned_fraction(elapsed: float, profile: Sequence[float] | None = None) -> float:
    """Fraction of the budget the plan allows by ``elapsed`` (0..1) of the period.

    :param elapsed: fraction of the period elapsed.
    :param profile: expected traffic share per equal slot of the period (sums to 1), or None
        for a uniform plan.
    """
    elapsed = min(1.0, max(0.0, elapsed))
    if not profile:
        return elapsed
    pos = elapsed * len(profile)
    whole = int(pos)
    done = sum(profile[:whole])
    if whole < len(profile):
        done += profile[whole] * (pos - whole)
    return min(1.0, done / sum(profile))


def planned_spend(budget_micros: int, elapsed: float, profile: Sequence[float] | None = None) -> int:
    """Micros the plan allows to be spent by ``elapsed``."""
    return int(budget_micros * planned_fraction(elapsed, profile))


def paced_out(committed_micros: int, budget_micros: int, elapsed: float, slack: float,
              profile: Sequence[float] | None = None) -> bool:
    """True when spend (plus reservations) runs ahead of the plan by more than ``slack`` of the budget."""
    allowed = planned_spend(budget_micros, elapsed, profile) + slack * budget_micros
    return committed_micros > allowed
