"""The multi-component reward of the per-opportunity policy, term by term (all in USD).

    R = α1·R_immediate + α2·R_attribution + α3·R_delayed + α4·R_diversity

* ``R_immediate = click_value · click + top_slot_value · position^-decay − κ · cost`` — what
  the auction and the next seconds tell: the price paid (second price, the position's CPC
  folded in), a click, and for a positional auction (paid search) the slot won, worth what
  being seen there is worth beyond its clicks (0 by default: a conversion campaign). ``κ`` is the
  budget's shadow price ``1/m`` when ``RewardConfig.shadow_price`` (``m`` the bid multiplier
  in force): the Lagrangian of "maximise value subject to the budget", so a win is worth
  ``value − price/m``, which is ≥ 0 exactly for the impressions the threshold rule buys; with
  ``shadow_price=False`` ``κ = 1`` (profit). ``click_value`` is 0 by default — a click is
  worth the conversions it brings, which R_delayed already counts.
* ``R_attribution = multi-touch credit × conversion value`` — realised: the stream's
  attribution model splits each joined conversion over the touches of its 14-day window.
* ``R_delayed = expected attributed value still to come`` — delay-aware: for a touch with no
  conversion yet, ``P(convert later | pending for e) × v̄`` from the Chapelle delay model
  (:mod:`agent_service.delay`), with ``v̄`` the posterior-mean conversion value. Recorded at
  decision time and *replaced* as credit arrives or the window closes (then it is 0).
* ``R_diversity = creative_freshness × channel_efficiency × unit`` — ``freshness = 0.85^n``
  for a creative the person already saw ``n`` times; ``efficiency`` = the channel's value per
  dollar relative to the campaign's, clipped to [0, 2] (organic, free, counts 2). A shaping
  term for creative rotation, weighted α4 = 0.1 by default (``RewardConfig.alpha_diversity``).

Every function is pure and vectorised over numpy arrays.
"""

from __future__ import annotations

import numpy as np

from agent_service.config import RewardConfig

__all__ = ["attribution", "delayed", "diversity", "immediate", "slot_value", "slot_value_usd", "total"]


def slot_value_usd(cfg: RewardConfig, position: int | None) -> float:
    """:func:`slot_value` of one record (the stream's per-result path: no numpy per event)."""
    return cfg.top_slot_value_usd * position ** -cfg.position_decay if position and cfg.top_slot_value_usd else 0.0


def slot_value(cfg: RewardConfig, position: np.ndarray) -> np.ndarray:
    """The won slot's visibility value (USD): ``top_slot_value / position^decay`` for positions
    1, 2, ...; 0 where there is no position (display, organic, a lost auction: position 0)."""
    p = np.asarray(position, dtype=np.float64)
    return np.where(p >= 1, cfg.top_slot_value_usd * np.maximum(p, 1.0) ** -cfg.position_decay, 0.0)


def immediate(cfg: RewardConfig, clicked: np.ndarray, cost_usd: np.ndarray, multiplier: np.ndarray,
              position: np.ndarray | None = None) -> np.ndarray:
    """R_immediate per decision.

    :param clicked: bool [N]. :param cost_usd: price paid per decision [N] (0 when lost).
    :param multiplier: bid multiplier m in force [N] (> 0).
    :param position: slot won per decision [N] (1 = top; 0: none, or lost); None: no positions.
    """
    kappa = 1.0 / np.maximum(multiplier, 1e-3) if cfg.shadow_price else np.ones_like(cost_usd)
    seen = slot_value(cfg, position) if position is not None else 0.0
    return cfg.click_value_usd * clicked.astype(np.float64) + seen - kappa * cost_usd


def attribution(credit_usd: np.ndarray) -> np.ndarray:
    """R_attribution: the realised credit (USD) each decision received."""
    return np.asarray(credit_usd, dtype=np.float64)


def delayed(p_future: np.ndarray, value_usd: float | np.ndarray) -> np.ndarray:
    """R_delayed: P(attributed conversion still to come | what is known now) × conversion value."""
    return np.asarray(p_future, dtype=np.float64) * value_usd


def diversity(cfg: RewardConfig, exposures_before: np.ndarray, value_per_cost: np.ndarray,
              campaign_value_per_cost: float) -> np.ndarray:
    """R_diversity = 0.85^exposures × clip(value per cost / campaign's, 0, 2) × unit (USD)."""
    fresh = 0.85 ** np.asarray(exposures_before, dtype=np.float64)
    eff = np.clip(np.asarray(value_per_cost) / max(campaign_value_per_cost, 1e-9), 0.0, 2.0)
    return fresh * eff * cfg.diversity_unit_usd


def total(cfg: RewardConfig, imm: np.ndarray, attr: np.ndarray, dly: np.ndarray, div: np.ndarray) -> np.ndarray:
    """R = α1·R_immediate + α2·R_attribution + α3·R_delayed + α4·R_diversity."""
    return (cfg.alpha_immediate * imm + cfg.alpha_attribution * attr + cfg.alpha_delayed * dly
            + cfg.alpha_diversity * div)
