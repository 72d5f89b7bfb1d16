"""The simulated people (after RecSim NG's user models): segments, devices, logins, activity.

``Population`` holds static attributes for ``lanes`` independent worlds of ``persons`` people
each (person ``g = lane * persons + i``), as flat arrays. Dynamic journey state lives in the
engine. Everything is drawn from the calibration with the run's generator.

Ground truth here (``segment``, ``baseline``) is never shown to the agent; what the agent can
see of a person is what a bid request carries: a device id, its type, a buyer uid when the
person is logged in on that device, and a page category correlated with the segment.
"""

from __future__ import annotations

import numpy as np

from simulators.calibration.schema import Calibration
from simulators.creatives import ab_arm

__all__ = ["Population", "device_id", "user_id"]


def device_id(lane: int, person: int, d: int) -> str:
    """The device id the service sees (``BidRequest.device.ifa``) for a lane-local person."""
    return f"dev-{person}-{d}" if lane == 0 else f"dev{lane}-{person}-{d}"


def user_id(lane: int, person: int) -> str:
    """The logged-in (hashed) user id of a lane-local person."""
    return f"user-{person}" if lane == 0 else f"user{lane}-{person}"


class Population:
    """People and devices of ``lanes`` independent worlds.

    :param cal: the calibration.
    :param persons: people per lane.
    :param lanes: independent worlds.
    :param rng: the generator to draw from.
    """

    def __init__(self, cal: Calibration, persons: int, lanes: int, rng: np.random.Generator) -> None:
        self.persons = persons
        self.lanes = lanes
        total = persons * lanes
        k = cal.n_segments
        shares = np.array([s.share for s in cal.segments], dtype=np.float64)
        shares /= shares.sum()
        self.segment = rng.choice(k, size=total, p=shares).astype(np.int8)
        """True segment per person (ground truth)."""
        acc = cal.targeting.audience_accuracy
        noise = rng.integers(0, k, size=total).astype(np.int8)
        self.audience = np.where(rng.random(total) < acc, self.segment, noise).astype(np.int8)
        """The ad platform's audience label (targeting acts on it; ground truth for the agent)."""
        mean = np.array([s.interest_mean for s in cal.segments])[self.segment]
        sd = np.array([s.interest_sd for s in cal.segments])[self.segment]
        self.baseline = np.maximum(0.0, mean + sd * rng.standard_normal(total))
        """Interest each person relaxes to without exposures."""
        self.initial = np.maximum(0.0, self.baseline + cal.journey.initial_spread * rng.standard_normal(total))
        """Interest at the world's start."""
        sig = cal.population.activity_sigma
        self.activity = np.exp(sig * rng.standard_normal(total) - sig**2 / 2)
        """Relative browsing activity (share of traffic within the segment)."""
        self.n_dev = (rng.choice(3, size=total, p=np.asarray(cal.population.devices_per_person)) + 1).astype(np.int8)
        """Devices per person (1-3)."""
        self.dev_start = np.concatenate([[0], np.cumsum(self.n_dev[:-1], dtype=np.int64)]).astype(np.int32)
        """Index of each person's first device."""
        n_dev_total = int(self.n_dev.sum(dtype=np.int64))
        self.dev_person = np.repeat(np.arange(total, dtype=np.int32), self.n_dev)
        """Owner (global person) of each device."""
        types = np.array(cal.population.device_types, dtype=np.int8)
        tshare = np.asarray(cal.population.device_type_shares, dtype=np.float64)
        self.dev_type = types[rng.choice(types.size, size=n_dev_total, p=tshare / tshare.sum())]
        """AdCOM device type of each device."""
        self.dev_logged = rng.random(n_dev_total) < cal.population.login_rate
        """Whether the person is logged in on the device (a deterministic identity link)."""
        self.dev_local = (np.arange(n_dev_total) - self.dev_start[self.dev_person]).astype(np.int8)
        """Index of the device among its owner's devices."""
        arms = cal.creatives.ab_arms
        self.dev_arm = np.array([ab_arm(self.device_id(g), arms) for g in range(n_dev_total)], dtype=np.int8)
        """A/B arm of each device (the hash of its id the service would compute)."""
        self._build_samplers(k)

    # --- ids ------------------------------------------------------------------------------------
    def device_id(self, device: int) -> str:
        """Device id string of a global device index."""
        g = int(self.dev_person[device])
        return device_id(g // self.persons, g % self.persons, int(self.dev_local[device]))

    def user_id(self, person: int) -> str:
        """User id string of a global person index."""
        return user_id(person // self.persons, person % self.persons)

    # --- sampling people for opportunities -------------------------------------------------------
    def _build_samplers(self, k: int) -> None:
        lane = np.repeat(np.arange(self.lanes), self.persons)
        block = lane * k + self.segment.astype(np.int64)
        self._order = np.argsort(block, kind="stable").astype(np.int32)
        sorted_block = block[self._order]
        w = self.activity[self._order]
        starts = np.searchsorted(sorted_block, np.arange(self.lanes * k))
        ends = np.searchsorted(sorted_block, np.arange(self.lanes * k), side="right")
        cum = np.cumsum(w)
        before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        total = cum[np.maximum(ends - 1, 0)] - before
        self.block_weight = np.where(ends > starts, total, 0.0).reshape(self.lanes, k)
        """Total activity per (lane, segment): zero for an empty segment."""
        safe = np.where(total > 0, total, 1.0)
        within = np.minimum((cum - before[sorted_block]) / safe[sorted_block], 1.0)
        within[(ends - 1)[ends > starts]] = 1.0  # exact block ends: rounding never leaks into the next block
        self._cum = sorted_block + within

    def sample_people(self, lane: int, segment: np.ndarray, u: np.ndarray) -> np.ndarray:
        """People of ``lane`` in the given segments, drawn in proportion to their activity.

        :param lane: the lane.
        :param segment: segment of each draw, shape (n,).
        :param u: uniforms in [0, 1), shape (n,).
        """
        k = self.block_weight.shape[1]
        key = (lane * k + segment.astype(np.int64)) + np.clip(u, 1e-12, 1.0 - 1e-12)
        idx = np.searchsorted(self._cum, key, side="left")
        return np.asarray(self._order[np.minimum(idx, self._order.size - 1)])
