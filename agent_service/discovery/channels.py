"""Channel mix and click/conversion rates by channel and device.

**Method.** Channel mix: share of ad sessions per channel. CTR: engaged (clicked) sessions per
session, by channel and by channel × device, with a binomial standard error. CVR: conversions
attributed to a channel's clicks by the delay EM (``agent_service.discovery.delays``)
divided by those clicks' expected observable share F(follow-up), so clicks still inside their conversion
window count only for the part of it that has passed (right-censoring), not as failures.
Segment-level CTR logits and CVR multipliers use the same counts weighted by each unit's
segment responsibilities.

**Check.** Round trip (tests/discovery): each channel's CTR within the stated tolerance of the
generating world's expected CTR on the same impressions (mean true click probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.discovery.data import AD_CHANNELS, DEVICES, Observations
from agent_service.discovery.delays import DelayFinding

__all__ = ["ChannelFinding", "discover_channels"]


@dataclass(frozen=True)
class ChannelFinding:
    sessions: np.ndarray
    """[3] ad sessions per channel."""
    mix: np.ndarray
    """[3] share of sessions per channel."""
    ctr: np.ndarray
    """[3] clicks / sessions per channel (NaN without sessions)."""
    ctr_se: np.ndarray
    """[3] binomial standard error of ``ctr``."""
    ctr_by_device: np.ndarray
    """[3, devices] CTR per channel × device category."""
    cvr: np.ndarray
    """[3] conversions per click (censoring-corrected)."""
    cvr_by_device: np.ndarray
    """[3, devices] the same per device category."""
    segment_ctr_logit: np.ndarray
    """[K] segment CTR logit minus everyone's."""
    segment_cvr_mult: np.ndarray
    """[K] segment CVR / everyone's."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def discover_channels(obs: Observations, delays: DelayFinding, resp: np.ndarray) -> ChannelFinding:
    """Channel mix and rates.

    :param obs: the ingested sessions.
    :param delays: the delay fit (its per-click attributed conversions and exposures).
    :param resp: [units, K] segment responsibilities.
    """
    nc, nd = len(AD_CHANNELS), len(DEVICES)
    ch, dev = obs.s_channel.astype(np.int64), obs.s_device.astype(np.int64)
    click = obs.s_click.astype(np.float64)
    sess = np.bincount(ch, minlength=nc).astype(np.float64)
    clk = np.bincount(ch, weights=click, minlength=nc)
    ctr = np.where(sess > 0, clk / np.maximum(sess, 1), np.nan)
    se = np.sqrt(np.where(sess > 0, ctr * (1 - ctr) / np.maximum(sess, 1), np.nan))
    cell = ch * nd + dev
    s_cd = np.bincount(cell, minlength=nc * nd).reshape(nc, nd)
    c_cd = np.bincount(cell, weights=click, minlength=nc * nd).reshape(nc, nd)
    expo = delays.exposure
    onehot = np.zeros((ch.size, nc * nd))
    onehot[np.arange(ch.size), cell] = 1.0
    cv_cd = delays.attributed(onehot).reshape(nc, nd)
    ex_cd = np.bincount(cell, weights=expo, minlength=nc * nd).reshape(nc, nd)
    cv, ex = cv_cd.sum(axis=1), ex_cd.sum(axis=1)
    w = resp[obs.s_unit]  # [sessions, K]
    seg_ctr = (w * click[:, None]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)
    all_ctr = click.mean()
    seg_cvr = delays.attributed(w) / np.maximum((w * expo[:, None]).sum(axis=0), 1e-12)
    all_cvr = cv.sum() / max(expo.sum(), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ChannelFinding(
            sessions=sess, mix=sess / sess.sum(), ctr=ctr, ctr_se=se,
            ctr_by_device=np.where(s_cd > 0, c_cd / np.maximum(s_cd, 1), np.nan),
            cvr=np.where(ex > 0, cv / np.maximum(ex, 1e-12), np.nan),
            cvr_by_device=np.where(ex_cd > 0, cv_cd / np.maximum(ex_cd, 1e-12), np.nan),
            segment_ctr_logit=_logit(seg_ctr) - float(_logit(np.array([all_ctr]))[0]),
            segment_cvr_mult=seg_cvr / max(all_cvr, 1e-12))
