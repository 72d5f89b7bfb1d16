"""A reader for the Open Bandit Dataset sample (ZOZOTOWN, Saito et al. 2020) that the ``obp`` package ships.

The sample is 10,000 rounds per logging policy (``random``: uniform over 80 items;
``bts``: Bernoulli Thompson sampling) and campaign (``all``, ``men``, ``women``), three list
positions, a click as the reward and the logging policy's propensity. The data are CC BY 4.0
(ZOZO Technologies); we read them where obp installed them rather than copying them in.

The arrays follow ``obp.dataset.OpenBanditDataset.obtain_batch_bandit_feedback``: rows in time
order, positions ranked densely from 0, the context the one-hot user features with the first
category of each dropped (``pandas.get_dummies(drop_first=True)``). Only the standard library
and numpy are used: the project does not depend on obp, its pinned pandas or its torch.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["OBD_DIR_ENV", "BanditFeedback", "find_obd_dir", "load_obd"]

OBD_DIR_ENV = "GAELP_OBD_DIR"
"""Environment variable naming the ``obd`` directory (the one holding ``random/all/all.csv``)."""


@dataclass(frozen=True)
class BanditFeedback:
    """Logged bandit feedback of one (logging policy, campaign); shapes in the docstrings.

    :param behavior_policy: ``random`` or ``bts``. :param campaign: ``all``, ``men`` or ``women``.
    """

    behavior_policy: str
    campaign: str
    action: NDArray[np.intp]
    """[n] item shown."""
    position: NDArray[np.intp]
    """[n] list position, 0-based."""
    reward: NDArray[np.float64]
    """[n] click (0/1)."""
    pscore: NDArray[np.float64]
    """[n] logging policy's probability of the item at that position."""
    context: NDArray[np.float64]
    """[n, d] one-hot user features (first category of each dropped)."""

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.action.max()) + 1

    @property
    def len_list(self) -> int:
        return int(self.position.max()) + 1


def find_obd_dir(explicit: str | Path | None = None, venv: str | Path | None = None) -> Path | None:
    """The ``obd`` data directory: ``explicit``, else ``$GAELP_OBD_DIR``, else inside obp's
    install in ``venv`` (``lib/python3.*/site-packages/obp/dataset/obd``); None when absent."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    if os.environ.get(OBD_DIR_ENV):
        candidates.append(Path(os.environ[OBD_DIR_ENV]))
    if venv is not None:
        candidates.extend(sorted(Path(venv).glob("lib/python3*/site-packages/obp/dataset/obd")))
    for c in candidates:
        if (c / "random" / "all" / "all.csv").is_file():
            return c
    return None


def _dummies(column: list[str]) -> NDArray[np.float64]:
    cats = sorted(set(column))[1:]  # get_dummies sorts the categories; drop_first drops the smallest
    index = {c: i for i, c in enumerate(cats)}
    out = np.zeros((len(column), len(cats)))
    for row, value in enumerate(column):
        j = index.get(value)
        if j is not None:
            out[row, j] = 1.0
    return out


def load_obd(data_dir: str | Path, behavior_policy: str = "random", campaign: str = "all") -> BanditFeedback:
    """Read ``<data_dir>/<behavior_policy>/<campaign>/<campaign>.csv``.

    :param data_dir: the ``obd`` directory (:func:`find_obd_dir`).
    :param behavior_policy: ``random`` or ``bts``. :param campaign: ``all``, ``men`` or ``women``.
    """
    if behavior_policy not in ("random", "bts") or campaign not in ("all", "men", "women"):
        raise ValueError(f"unknown OBD slice {behavior_policy}/{campaign}")
    path = Path(data_dir) / behavior_policy / campaign / f"{campaign}.csv"
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    order = np.argsort(np.array([r["timestamp"] for r in rows]), kind="stable")  # ISO times: text order is time order
    rows = [rows[i] for i in order]
    raw_pos = np.array([int(r["position"]) for r in rows])
    _, position = np.unique(raw_pos, return_inverse=True)  # dense rank from 0
    user_cols = [c for c in rows[0] if "user_feature" in c]
    context = np.concatenate([_dummies([r[c] for r in rows]) for c in user_cols], axis=1)
    return BanditFeedback(
        behavior_policy=behavior_policy,
        campaign=campaign,
        action=np.array([int(r["item_id"]) for r in rows], dtype=np.intp),
        position=position.astype(np.intp),
        reward=np.array([float(r["click"]) for r in rows]),
        pscore=np.array([float(r["propensity_score"]) for r in rows]),
        context=context,
    )
