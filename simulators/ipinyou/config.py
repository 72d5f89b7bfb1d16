"""Settings of the iPinYou replay (campaign 2997, Cai et al., WSDM 2017) and the published reference numbers.

The replay's own settings live here rather than in ``agent_service.config`` so that the
benchmark can evolve on its own; the dataclass follows the house rules (frozen, one docstring
per field, ``__post_init__`` naming the bad key).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent_service.errors import ConfigError

__all__ = [
    "C0_VALUES",
    "FEEDBACK_MODES",
    "PUBLISHED_2997",
    "TEST_LOG_SHA256",
    "IPinYouConfig",
    "default_data_dir",
]

C0_VALUES: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
"""Budget ratios of the protocol, tightest first."""

PUBLISHED_2997: dict[str, dict[str, int]] = {
    "lin": {"clicks": 71, "cost": 203_610},
    "rlb": {"clicks": 78, "cost": 304_375},
    "ss_mdp": {"clicks": 80, "cost": 306_637},
    "mcpc": {"clicks": 48, "cost": 307_751},
}
"""Published results for campaign 2997 at c0 = 1/32 (Cai et al., WSDM 2017)."""

FEEDBACK_MODES: tuple[str, ...] = ("full", "won")

TEST_LOG_SHA256 = "1068befe0006f37affdc8b4b13ea6bcbcca28929233133fca309cebeafdfbde8"
"""sha256 of campaign 2997's ``test.theta.txt``: a run on a log with these bytes, wherever the
file lies, is a test run and goes on the ledger (:func:`agent_service.lab.ipinyou.runner.record_test_run`)."""


def default_data_dir() -> Path:
    """``../shared/data/ipinyou-2997`` relative to the repository root (found from this file), or
    under ``$GAELP_SHARED`` when set (a checkout elsewhere, as the tests' conftest allows)."""
    shared = os.environ.get("GAELP_SHARED") or Path(__file__).resolve().parents[3] / "shared"
    return Path(shared) / "data" / "ipinyou-2997"


@dataclass(frozen=True)
class IPinYouConfig:
    """The replay protocol (:mod:`simulators.ipinyou.replay`; defaults are the published ones)."""

    data_dir: str = ""
    """Folder with ``test.theta.txt`` and ``info.json``; empty means :func:`default_data_dir`."""
    episode_length: int = 1000
    """N: consecutive auctions per episode (the last, partial episode counts too)."""
    c0: float = 1 / 32
    """Budget ratio: per-episode budget B = int(CPM_train * c0 * N)."""
    max_bid: int = 300
    """Highest bid allowed (the market price never exceeds it in this data)."""
    feedback: str = "won"
    """What a bidder learns after each auction: ``won`` (click and price only for won auctions; a
    lost auction only says the price was above the bid — what a real bidder sees, the default) or
    ``full`` (click and market price of every auction, as the log has them: a reference only)."""

    def __post_init__(self) -> None:
        if self.episode_length <= 0:
            raise ConfigError("ipinyou.episode_length", "must be > 0 (the protocol uses 1000)")
        if not 0 < self.c0 <= 1:
            raise ConfigError("ipinyou.c0", "must be in (0, 1], e.g. 0.03125")
        if not 0 < self.max_bid <= 10_000:
            raise ConfigError("ipinyou.max_bid", "must be in (0, 10000] (the protocol uses 300)")
        if self.feedback not in FEEDBACK_MODES:
            raise ConfigError("ipinyou.feedback", f"must be one of {FEEDBACK_MODES}")

    @property
    def data_path(self) -> Path:
        """The data folder as a path (the default if ``data_dir`` is empty)."""
        return Path(self.data_dir) if self.data_dir else default_data_dir()
