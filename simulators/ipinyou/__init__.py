"""The iPinYou real-time-bidding replay (campaign 2997, Cai et al., WSDM 2017) and its baselines.

Modules: ``config`` (settings, published numbers), ``data`` (log and info.json loading),
``replay`` (the protocol, step-by-step and vectorised; the ``Bidder`` protocol), ``env``
(``IPinYouEnv``, a gymnasium.Env), ``market`` (synthetic episodes from training statistics),
``calibration`` (the pCTR refit), ``baselines`` (const, linear bidding) and ``rlb`` (Cai et al.'s
dynamic program). GAELP's learned bidder and the runner the CLI and the bench call live above,
in ``agent_service.lab.ipinyou``.
"""

from simulators.ipinyou.config import C0_VALUES, PUBLISHED_2997, IPinYouConfig, default_data_dir
from simulators.ipinyou.data import AuctionLog, CampaignInfo, load_info, load_log, parse_log
from simulators.ipinyou.replay import (
    Bidder,
    Observation,
    Outcome,
    ReplayResult,
    episode_budget,
    replay,
    replay_vectorised,
)

__all__ = [
    "C0_VALUES",
    "PUBLISHED_2997",
    "AuctionLog",
    "Bidder",
    "CampaignInfo",
    "IPinYouConfig",
    "Observation",
    "Outcome",
    "ReplayResult",
    "default_data_dir",
    "episode_budget",
    "load_info",
    "load_log",
    "parse_log",
    "replay",
    "replay_vectorised",
]
