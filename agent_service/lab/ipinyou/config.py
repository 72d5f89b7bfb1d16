"""Settings of GAELP's iPinYou bidder (see :mod:`agent_service.lab.ipinyou.bidder`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_service.config.agent import DQNConfig
from agent_service.errors import ConfigError
from simulators.ipinyou.market import MarketConfig

__all__ = ["AgentConfig"]


@dataclass(frozen=True)
class AgentConfig:
    """Every knob of the bidder, fixed a priori or chosen on synthetic data; none was searched
    against the test log's clicks."""

    slot_length: int = 100
    """Auctions per DQN decision slot (10 slots per 1000-auction episode)."""
    z_grid: tuple[float, ...] = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2)
    """Candidate episode-level log multipliers z0 (the dual variable) scored on synthetic episodes."""
    z_episodes: int = 150
    """Synthetic episodes scoring each z0 candidate (common random numbers)."""
    train_episodes: int = 3_000
    """Synthetic episodes of offline DQN training."""
    parallel_episodes: int = 200
    """Synthetic episodes simulated in lockstep (one batch)."""
    eval_episodes: int = 150
    """Held-out synthetic episodes comparing the DQN with the plain multiplier z0 (the gate)."""
    finetune_after: tuple[int, ...] = (1, 4, 16, 64)
    """Replay episodes after which the market is refitted to the past, z0 re-chosen and the
    DQN trained more."""
    finetune_episodes: int = 200
    """Synthetic episodes of DQN training per online refit."""
    finetune_eps: float = 0.1
    """Exploration during online refits."""
    absolute_actions: bool = False
    """The DQN's action sets the slot's adjustment dz directly (True) or moves it by a step
    (False, DRLB's increments)."""
    control_variate: bool = True
    """Train on the slot reward minus what the plain multiplier z0 wins on the same synthetic
    auctions (common random numbers): the same optimal policy, far less variance."""
    deploy_gate: bool = True
    """Serve the DQN's adjustments only if they beat z0 on held-out synthetic episodes."""
    pctr_halflife: float = 5_000.0
    """Half-life, in auctions, of the running pCTR level theta_bar (tracks drifts of the pCTR
    stream; starts at the training CTR)."""
    price_prior_weight: float = 5_000.0
    """Weight, in auctions, of the training price histogram in the refitted price model."""
    pctr_pool: int = 20_000
    """Most recent pCTRs kept to resample synthetic pCTRs from after a refit."""
    calibrate: bool = True
    """Reshape pCTR by its online recalibration from past clicks (:mod:`simulators.ipinyou.calibration`),
    refitted with the market; False: pCTR as given (RLB's view)."""
    calib_slope_sd: float = 0.25
    """Prior sd of the calibration slope around 1 (a priori: a few hundred clicks can move it)."""
    calib_offset_sd: float = 2.0
    """Prior sd of the calibration offset (the level is normalised away; weak)."""
    replan: bool = False
    """At each online refit, rebuild RLB's value function from the refitted (censored, Kaplan-Meier
    style) price model instead of keeping the one from the training histogram. Off: +2 clicks at
    c0 = 1/32 on the validation split (within noise) for four more dynamic programs per run."""
    price_ctr: bool = False
    """Value a won impression by its pCTR times a factor of the price paid, learned from won auctions
    at each refit (:mod:`agent_service.lab.ipinyou.price_ctr`); False: click and price independent
    given the pCTR (RLB's assumption). Off: on the validation split (bench/README.md) it moved
    clicks by +3 / 0 / -2 / -6 at c0 = 1/32 / 1/16 / 1/8 / 1/4 - no gain."""
    price_ctr_prior: float = 30.0
    """Pseudo-clicks shrinking each price bucket's factor to 1."""
    market: MarketConfig = field(default_factory=lambda: MarketConfig(
        pctr_log_sd=0.5, price_laplace=1.0, price_level_jitter=0.3, ctr_level_jitter=0.3))
    """Synthetic training market (domain randomisation: +-30% market and CTR levels)."""
    dqn: DQNConfig = field(default_factory=lambda: DQNConfig(
        adjustments=(-0.1, -0.03, 0.0, 0.03, 0.1), z_min=-1.0, z_max=1.0, lr=1e-3, buffer_size=100_000,
        batch_size=128, learning_starts=1_000, updates_per_transition=0.25, eps_start=1.0, eps_end=0.05,
        eps_decay_transitions=20_000))
    """The slot-level multiplier DQN (the hybrid agent's; ``dual_step`` and ``z_init`` are unused here)."""

    def __post_init__(self) -> None:
        if self.slot_length <= 0:
            raise ConfigError("agent.slot_length", "must be > 0")
        if not self.z_grid or 0.0 not in self.z_grid:
            raise ConfigError("agent.z_grid", "must be non-empty and contain 0.0 (the plain plan)")
        if self.z_episodes <= 0 or self.eval_episodes <= 0:
            raise ConfigError("agent.z_episodes", "z_episodes and eval_episodes must be > 0")
        if self.train_episodes < 0 or self.finetune_episodes < 0:
            raise ConfigError("agent.train_episodes", "must be >= 0")
        if self.parallel_episodes <= 0:
            raise ConfigError("agent.parallel_episodes", "must be > 0")
        if not 0 <= self.finetune_eps <= 1:
            raise ConfigError("agent.finetune_eps", "must be in [0, 1]")
        if self.pctr_halflife <= 0 or self.price_prior_weight <= 0:
            raise ConfigError("agent.pctr_halflife", "pctr_halflife and price_prior_weight must be > 0")
        if self.calib_slope_sd <= 0 or self.calib_offset_sd <= 0:
            raise ConfigError("agent.calib_slope_sd", "calib_slope_sd and calib_offset_sd must be > 0")
        if self.price_ctr_prior <= 0:
            raise ConfigError("agent.price_ctr_prior", "must be > 0")
        if self.pctr_pool <= 0:
            raise ConfigError("agent.pctr_pool", "must be > 0")
