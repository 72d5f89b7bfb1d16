"""Behaviour segments: a mixture over each person's sessions, K chosen by BIC.

**Method.** Each unit (a logged-in person, else a device) is a vector of counts: its ad sessions
per page context and per hour of day. The counts are modelled as a mixture of multinomials
(``agent_service.agent.model.segment_em``: EM with seeded restarts, K = 1 … ``k_max`` chosen by
BIC); a session adds one count to its context and one to its hour, so the joint multinomial is
the product of the two views up to a constant. Channels, devices and click depth are *not* in
the likelihood: they are properties of the device or of the person's journey stage that repeat
across a unit's sessions (not independent draws per session), and a multinomial mixture would
split them into spurious segments. They, and conversion value, are read per segment afterwards
through the units' posterior responsibilities:

- share = mixture weight π_k;
- hourly activity = P(k | hour) / π_k (normalised to mean 1), which is what the simulator's
  ``segments.hourly`` multiplies its traffic profile by;
- category = the segment's most likely context, ``traffic.context_signal`` from how much of its
  mass sits there beyond uniform;
- value = responsibility-weighted mean conversion value, sigma = weighted sd of log values
  (the simulator's values are log-normal with that mean and sigma);
- CTR logit and CVR multiplier = the segment's clicks per session and conversions per click
  relative to everyone's.

**Check.** The round trip (tests/discovery) matches discovered to generating segments by the
Hungarian assignment on context mixes and requires the same K and shares within the stated
tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.agent.model.segment_em import MixtureFit, select_k
from agent_service.discovery.data import Observations
from agent_service.units import HOUR_MS

__all__ = ["SegmentFinding", "discover_segments"]

_MIN_CONTEXT_SHARE = 0.005
"""Contexts with a smaller share of sessions are pooled into one column (rare pages carry no segment signal)."""


@dataclass(frozen=True)
class SegmentFinding:
    """Discovered segments (ordered by share, largest first)."""

    fit: MixtureFit
    bic: dict[int, float]
    """BIC per K tried."""
    contexts: list[str]
    """Context names of the context columns (the pooled column last, named "(other)")."""
    share: np.ndarray
    """[K] π."""
    context_mix: np.ndarray
    """[K, C] P(context | segment)."""
    hour_mix: np.ndarray
    """[K, 24] P(hour | segment)."""
    hourly: np.ndarray
    """[K, 24] activity multiplier per hour (mean 1)."""
    resp: np.ndarray
    """[units, K] posterior responsibilities (units without an ad session get π)."""
    category: list[str]
    """Most likely context per segment."""
    context_signal: float
    """Estimated P(session context = the segment's own category) beyond chance."""
    value_usd: np.ndarray
    """[K] mean conversion value (NaN without conversions)."""
    value_sigma: np.ndarray
    """[K] sd of log conversion value."""
    conversions: np.ndarray
    """[K] responsibility-weighted conversions."""


def discover_segments(obs: Observations, k_max: int = 6, seed: int = 0, restarts: int = 3) -> SegmentFinding:
    """Fit the behaviour mixture and summarise each segment.

    :param obs: the ingested sessions and conversions.
    :param k_max: largest K tried.
    :param seed: seed of the EM restarts.
    :param restarts: random starts per K.
    """
    n_ctx = len(obs.contexts)
    ctx_count = np.bincount(obs.s_context, minlength=n_ctx)
    keep = np.flatnonzero(ctx_count >= _MIN_CONTEXT_SHARE * obs.s_context.size)
    col = np.full(n_ctx, keep.size, dtype=np.int64)
    col[keep] = np.arange(keep.size)
    c = keep.size + 1
    hour = (obs.s_time // HOUR_MS) % 24
    x = np.zeros((obs.n_units, c + 24))
    np.add.at(x, (obs.s_unit, col[obs.s_context]), 1.0)
    np.add.at(x, (obs.s_unit, c + hour), 1.0)
    seen = x.sum(axis=1) > 0
    fit, bic = select_k(x[seen], k_max, seed=seed, restarts=restarts)
    order = np.argsort(-fit.share)
    share, mix = fit.share[order], fit.mix[order]
    # posterior responsibilities of every unit (the mixture's own E-step)
    logit = np.log(share)[None, :] + x @ np.log(mix).T
    logit -= logit.max(axis=1, keepdims=True)
    resp = np.exp(logit)
    resp /= resp.sum(axis=1, keepdims=True)
    resp[~seen] = share
    ctx_mix = mix[:, :c] / mix[:, :c].sum(axis=1, keepdims=True)
    hour_mix = mix[:, c:] / mix[:, c:].sum(axis=1, keepdims=True)
    p_h = share @ hour_mix
    hourly = hour_mix / np.maximum(p_h, 1e-12)[None, :]
    hourly /= hourly.mean(axis=1, keepdims=True)
    names = [obs.contexts[i] for i in keep] + ["(other)"]
    top = ctx_mix[:, :keep.size].argmax(axis=1) if keep.size else np.zeros(len(share), dtype=np.int64)
    category = [names[i] for i in top]
    own = float(share @ ctx_mix[np.arange(len(share)), top])
    chance = 1.0 / max(keep.size, 1)
    signal = float(np.clip((own - chance) / (1.0 - chance), 0.0, 1.0)) if keep.size > 1 else 1.0
    value, sigma, convs = _values(obs, resp)
    return SegmentFinding(fit, bic, names, share, ctx_mix, hour_mix, hourly, resp, category, signal, value, sigma,
                          convs)


def _values(obs: Observations, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = resp.shape[1]
    ok = np.isfinite(obs.c_value) & (obs.c_value > 0)
    w = resp[obs.c_unit[ok]]  # [conversions, K]
    v = obs.c_value[ok]
    tot = w.sum(axis=0)
    if not ok.any():
        return np.full(k, np.nan), np.full(k, np.nan), tot
    mean = (w * v[:, None]).sum(axis=0) / np.maximum(tot, 1e-12)
    lv = np.log(v)
    lmean = (w * lv[:, None]).sum(axis=0) / np.maximum(tot, 1e-12)
    var = (w * (lv[:, None] - lmean[None, :]) ** 2).sum(axis=0) / np.maximum(tot, 1e-12)
    mean[tot < 1.0] = np.nan
    return mean, np.sqrt(var), tot
