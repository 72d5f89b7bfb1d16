"""Creatives: latent per-segment appeal (RecSim-style topic vectors), and the A/B assignment hash.

``build_appeal`` turns the calibration's generator parameters (or its explicit matrix from
data) into a segments × creatives matrix of CTR logit effects: a segment's taste vector and a
creative's topic vector meet in a cosine, scaled by ``appeal_scale``, plus the creative's own
quality. The matrix is ground truth: the agent only ever sees creative ids.

``ab_arm`` is the A/B assignment mechanism: a stable hash of the device id (the same string the
service keys journeys on) into one of ``arms`` arms, so that the service and the simulator's
environments agree on every device's arm without sharing state.
"""

from __future__ import annotations

import zlib

import numpy as np

from simulators.calibration.schema import Calibration

__all__ = ["AB_SALT", "ab_arm", "build_appeal"]

AB_SALT = "gaelp-ab-1"
"""Salt of the A/B hash; change it to re-randomise every device's arm."""


def build_appeal(cal: Calibration) -> np.ndarray:
    """Segment × creative appeal (CTR logit effect), float64 of shape (segments, creatives).

    :param cal: the calibration (``creatives`` section, and the number of segments).
    """
    c = cal.creatives
    if c.appeal:
        return np.array(c.appeal, dtype=np.float64)
    rng = np.random.default_rng(c.seed)
    taste = rng.standard_normal((cal.n_segments, c.dims))
    topic = rng.standard_normal((c.count, c.dims))
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)
    topic /= np.linalg.norm(topic, axis=1, keepdims=True)
    quality = c.quality_sigma * rng.standard_normal(c.count)
    return c.appeal_scale * (taste @ topic.T) + quality[None, :]


def ab_arm(device_id: str, arms: int, salt: str = AB_SALT) -> int:
    """A/B arm of a device: ``crc32(salt + device_id) % arms``.

    :param device_id: the device id as the service sees it (``BidRequest.device.ifa``).
    :param arms: number of arms.
    :param salt: experiment salt.
    """
    return zlib.crc32((salt + device_id).encode()) % arms
