"""The world's traffic under a fixed exploration policy: what a GA4 export of it is made from.

``logged_traffic`` runs the engine hour by hour for ``days`` and yields every slot's
opportunities, the logging policy's actions and the outcomes. The policy is uniform and
blind: each opportunity picks one of the three channels uniformly at random (an impression
happens only when that channel is offered and, for organic, while the day's reach lasts), a
creative uniformly at random, and bids far above any competitor so a paid impression is always
won at the top position. Being blind, it shows every segment, stage and hour in proportion to
the world's own traffic, which is what lets discovery read the world's shape from the export
(an agent's traffic would show the world through the agent's choices).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from simulators.batches import Actions, EngineConfig, WorldOpportunities, WorldOutcomes, WorldTruth
from simulators.calibration.schema import Calibration
from simulators.engine import DAY_MS, HOUR_MS, Engine

__all__ = ["LOGGING_BID_TICKS", "LoggedSlot", "logged_traffic"]

LOGGING_BID_TICKS = 10_000_000
"""The logging policy's bid, ticks (10,000 USD CPM): above every log-normal competitor in practice."""


class LoggedSlot(NamedTuple):
    """One hour of the logged world."""

    opps: WorldOpportunities
    actions: Actions
    out: WorldOutcomes
    truth: WorldTruth
    """Ground truth of the slot (evaluation only; the exporter never reads it)."""


def logged_traffic(cal: Calibration, persons: int, opportunities_per_day: float, days: float, seed: int,
                   start_ms: int = 1_767_225_600_000) -> tuple[Engine, Iterator[LoggedSlot]]:
    """The engine and an iterator over its hourly slots under the logging policy.

    :param cal: the generating calibration.
    :param persons: people in the world.
    :param opportunities_per_day: expected opportunities per day.
    :param days: days of traffic.
    :param seed: seed of the world (and of the policy's draws).
    :param start_ms: event time of the first slot.
    """
    engine = Engine(cal, EngineConfig(persons=persons, opportunities_per_day=opportunities_per_day, lanes=1,
                                      seed=seed, start_ms=start_ms, enforce_targeting=False))
    policy_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x109]))
    end = start_ms + int(days * DAY_MS)

    def slots() -> Iterator[LoggedSlot]:
        t0 = start_ms
        while t0 < end:
            t1 = min(end, t0 + HOUR_MS)
            opps = engine.sample(0, t0, t1)
            n = opps.t.size
            acts = Actions(active=np.ones(n, dtype=bool), bid=np.full(n, LOGGING_BID_TICKS, dtype=np.int32),
                           creative=policy_rng.integers(0, engine.model.n_creatives, n).astype(np.int16),
                           channel=policy_rng.integers(0, 3, n).astype(np.int8),
                           target=np.full(n, cal.n_segments, dtype=np.int8))
            out, truth = engine.resolve(opps, acts)
            yield LoggedSlot(opps, acts, out, truth)
            t0 = t1

    return engine, slots()
