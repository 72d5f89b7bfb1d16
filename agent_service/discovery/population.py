"""Devices per person, logins and device types.

**Method.** GA4 links a person's devices only where they log in: a person with n devices,
each logged in with probability r, shows m ~ Binomial(n, r) devices under their user_id, and
people with m = 0 are not seen as people at all. r is the share of devices (user_pseudo_ids)
that carry a user_id; P(n = 1, 2, 3) is the maximum-likelihood fit of the zero-truncated
binomial mixture to the observed m of every user_id (m > 3 counts as 3). Device type shares
are the shares of devices by their first session's category (mobile → AdCOM 4, desktop → 2,
tablet → 5, smart tv → 3).

**Check.** Round trip (tests/discovery): P(n) within the stated absolute tolerance of the
generating calibration's ``devices_per_person``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import binom

from agent_service.discovery.data import Observations

__all__ = ["DEVICE_TYPES", "PopulationFinding", "discover_population"]

DEVICE_TYPES: dict[str, int] = {"mobile": 4, "desktop": 2, "tablet": 5, "smart tv": 3}
"""GA4 device category → AdCOM device type (the simulator's ``population.device_types``)."""


@dataclass(frozen=True)
class PopulationFinding:
    devices_per_person: tuple[float, float, float]
    """P(1), P(2), P(3 devices)."""
    login_rate: float
    device_types: tuple[int, ...]
    device_type_shares: tuple[float, ...]
    observed_linked: dict[int, int]
    """user_ids by number of linked devices seen (1, 2, 3+)."""


def discover_population(obs: Observations) -> PopulationFinding:
    """Fit devices per person and the login rate (see the module docstring).

    :param obs: the ingested sessions.
    """
    devices = obs.pseudo_device
    r = len(obs.pseudo_user) / max(len(devices), 1)
    per_user = Counter(obs.pseudo_user.values())
    m = np.minimum(np.array(list(per_user.values()) or [1]), 3)
    counts = np.bincount(m, minlength=4)[1:4].astype(np.float64)
    p = _fit(counts, min(max(r, 1e-3), 1.0))
    cats = Counter(d.lower() if d.lower() in DEVICE_TYPES else "smart tv" for d in devices.values())
    kinds = [k for k in DEVICE_TYPES if cats.get(k)]
    total = sum(cats[k] for k in kinds)
    return PopulationFinding(p, float(r), tuple(DEVICE_TYPES[k] for k in kinds),
                             tuple(round(cats[k] / total, 6) for k in kinds),
                             {i + 1: int(c) for i, c in enumerate(counts)})


def _fit(counts: np.ndarray, r: float) -> tuple[float, float, float]:
    # P(m | n) for n = 1..3, m = 1..3, zero-truncated over the mixture
    pm = np.array([[binom.pmf(mm, n, r) for mm in (1, 2, 3)] for n in (1, 2, 3)])  # [n, m]
    p0 = np.array([binom.pmf(0, n, r) for n in (1, 2, 3)])

    def nll(z: np.ndarray) -> float:
        w = np.exp(np.r_[0.0, z])
        w /= w.sum()
        obs_m = w @ pm / max(1.0 - w @ p0, 1e-12)
        return float(-(counts * np.log(np.maximum(obs_m, 1e-300))).sum())

    res = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
    e = np.exp(np.r_[0.0, res.x])
    p2, p3 = (round(float(v), 6) for v in e[1:] / e.sum())
    return 1.0 - p2 - p3, p2, p3
