"""Small builders shared by the simulator tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from simulators.batches import Actions, WorldOpportunities
from simulators.calibration import Calibration, load_calibration


def calibration(**sections: dict[str, Any]) -> Calibration:
    """The default calibration with some fields of some sections replaced, e.g.
    ``calibration(channels={"social": {"competitor_cpm": 5.0}})``."""
    return _replace(load_calibration(), sections)


def _replace(obj: Any, changes: dict[str, Any]) -> Any:
    kw = {}
    for name, value in changes.items():
        cur = getattr(obj, name)
        kw[name] = _replace(cur, value) if isinstance(value, dict) and dataclasses.is_dataclass(cur) else value
    return dataclasses.replace(obj, **kw)


def actions(opps: WorldOpportunities, bid_usd: float = 3.0, channel: int | None = None, creative: int = 0,
            target: int = 99) -> Actions:
    """Everyone bids ``bid_usd``: on paid search when offered (or ``channel``), else social."""
    n = opps.t.size
    ch = np.where(opps.offered[:, 1], 1, 2) if channel is None else np.full(n, channel)
    return Actions(active=np.ones(n, dtype=bool), bid=np.full(n, int(round(bid_usd * 1000)), dtype=np.int32),
                   creative=np.full(n, creative, dtype=np.int16), channel=ch.astype(np.int8),
                   target=np.full(n, min(target, 127), dtype=np.int8))
