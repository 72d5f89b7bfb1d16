"""Settings of the hybrid agent: one frozen dataclass per algorithm (TOML tables ``[hybrid]``,
``[hybrid.dqn]``, ``[hybrid.ppo]``), every field documented, bad values rejected by key.

Kept free of the agent's other modules (and of torch) so that ``agent_service.config`` can
carry them as its ``hybrid`` section; ``dqn.py``, ``ppo.py`` and ``hybrid.py`` re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_service.delay.config import DelayModelConfig
from agent_service.errors import ConfigError
from agent_service.units import WINDOW_DAYS

__all__ = ["DQNConfig", "HybridConfig", "PPOConfig"]


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of the bid-multiplier DQN (TOML table ``[hybrid.dqn]``)."""

    adjustments: tuple[float, ...] = (-0.3, -0.1, 0.0, 0.1, 0.3)
    """Actions: offsets of the log multiplier for one slot around the dual-paced level (0.1 ≈ +10 % on
    every bid of the slot); with ``dual_step = 0`` they accumulate (DRLB's adjustments)."""
    z_min: float = -3.0
    """Lowest log multiplier (bids ≥ e^-3 ≈ 0.05 × v̂)."""
    z_max: float = 1.6
    """Highest log multiplier (bids ≤ e^1.6 ≈ 5 × v̂: a loose budget buys beyond truthful)."""
    dual_step: float = 0.15
    """Integral step of the dual-paced level (Balseiro & Gur in log space):
    z_base −= dual_step · clip((slot spend − slot plan) / slot plan, −1, 5); 0 = pure DRLB."""
    z_init: float = -1.0
    """z of the very first period (later periods start from the previous period's mean z)."""
    hidden: int = 64
    """Width of the two hidden layers."""
    lr: float = 5e-4
    """Adam learning rate."""
    gamma: float = 1.0
    """Discount per slot (1: the objective is the period's total value)."""
    buffer_size: int = 50_000
    """Slot transitions kept in the replay buffer."""
    batch_size: int = 256
    """Minibatch of one update."""
    learning_starts: int = 512
    """Transitions collected before the first update."""
    updates_per_transition: float = 2.0
    """Gradient updates per collected transition."""
    tau: float = 0.01
    """Polyak rate of the target network per target update."""
    target_every: int = 1
    """Updates between target-network updates."""
    eps_start: float = 0.5
    """Initial exploration probability (ε-greedy over adjustments)."""
    eps_end: float = 0.03
    """Final exploration probability (keeps every propensity > 0 for off-policy evaluation)."""
    eps_decay_transitions: int = 10_000
    """Transitions over which ε decays linearly."""
    grad_clip: float = 10.0
    """Max gradient norm."""

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, reason: str) -> None:
            if not cond:
                raise ConfigError(f"hybrid.dqn.{key}", reason)
        need(len(self.adjustments) >= 2, "adjustments", "need at least two actions")
        need(self.z_min < 0 < self.z_max, "z_min", "need z_min < 0 < z_max")
        need(self.z_min <= self.z_init <= self.z_max, "z_init", "need z_min <= z_init <= z_max")
        need(self.dual_step >= 0, "dual_step", "must be >= 0 (0 disables the dual prior)")
        need(self.hidden > 0, "hidden", "must be > 0")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 <= self.gamma <= 1, "gamma", "must be in [0, 1]")
        need(0 < self.batch_size <= self.buffer_size, "batch_size", "need 0 < batch_size <= buffer_size")
        need(self.learning_starts >= self.batch_size, "learning_starts", "must be >= batch_size")
        need(self.updates_per_transition > 0, "updates_per_transition", "must be > 0")
        need(0 < self.tau <= 1, "tau", "must be in (0, 1]")
        need(self.target_every >= 1, "target_every", "must be >= 1")
        need(0 < self.eps_end <= self.eps_start <= 1, "eps_start", "need 0 < eps_end <= eps_start <= 1")
        need(self.eps_decay_transitions > 0, "eps_decay_transitions", "must be > 0")
        need(self.grad_clip > 0, "grad_clip", "must be > 0")

    @property
    def n_actions(self) -> int:
        """Number of adjustments."""
        return len(self.adjustments)

    def epsilon(self, transitions: int) -> float:
        """Linear ε schedule after ``transitions`` collected."""
        frac = min(1.0, transitions / self.eps_decay_transitions)
        return self.eps_start + frac * (self.eps_end - self.eps_start)


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of the per-opportunity learner (TOML table ``[hybrid.ppo]``)."""

    algorithm: str = "ppo"
    """``ppo`` (clipped surrogate + GAE) or ``reinforce`` (the plain policy-gradient baseline)."""
    lr: float = 1e-3
    """Adam learning rate (policy, critic, click model and encoder)."""
    clip: float = 0.2
    """PPO ratio clip ε."""
    gamma: float = 0.8
    """Discount per journey step (a later touch's reward reaches earlier touches through it)."""
    gae_lambda: float = 0.9
    """GAE λ: 0 is the one-step TD advantage, 1 the Monte-Carlo return minus the critic."""
    ent_coef: float = 0.003
    """Entropy bonus c_H."""
    vf_coef: float = 0.5
    """Critic loss weight c_v."""
    click_coef: float = 1.0
    """Weight of the click model's BCE (the auxiliary head behind v̂)."""
    model_coef: float = 1.0
    """Weight c_model of the heads' all-action terms through the click model (0 = off)."""
    creative_value_weight: float = 20.0
    """β > 0: the creative policy is softmax(β · (ℓ_click(s, c) + bonus_c)) from the click model's creative
    logit — the only creative-dependent part of v̂ — instead of the creative head, which the realised-reward
    gradient left near uniform over 60 creatives (regret ~15 %). 0 = the PPO creative head."""
    creative_optimism: float = 0.5
    """κ: optimism bonus κ / sqrt(1 + n_c · CTR) on the click logit of creative c (n_c its decayed impressions
    among people of this person's segments — ``CampaignStats.impressions_for`` — so n_c · CTR its expected
    clicks there: ~ the logit's standard error), so that creatives the model has barely seen for such people
    are still tried while they could be near the best; the bid uses the plain mean."""
    creative_eps: float = 0.02
    """ε of the creative policy (uniform mass over all creatives; the guide explores near-best creatives itself,
    and every 0.01 of uniform mass costs ~0.5 % creative regret)."""
    creative_temperature: float = 0.3
    """τ: entropy weight inside the all-action terms, in units of the normalised Q̂ spread."""
    creative_prior_impressions: float = 300.0
    """n0: impressions of a creative before the click model's view of it gets half weight (creative head's
    all-action term, ``creative_value_weight = 0`` only)."""
    epochs: int = 2
    """Passes over a rollout (REINFORCE always does one)."""
    minibatch: int = 256
    """Decisions per gradient step."""
    rollout: int = 4096
    """Decisions per update: the newest half, and a sample of older ones whose rewards matured."""
    max_grad_norm: float = 1.0
    """Gradient norm clip."""
    target_kl: float = 0.1
    """Stop the epochs early when the approximate KL to the behaviour policy exceeds this."""
    importance_cap: float = 5.0
    """REINFORCE's truncated importance weight c̄."""
    explore_eps: float = 0.05
    """Probability mass spread uniformly over the channel and target heads' allowed actions."""

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, reason: str) -> None:
            if not cond:
                raise ConfigError(f"hybrid.ppo.{key}", reason)
        need(self.algorithm in ("ppo", "reinforce"), "algorithm", "use 'ppo' or 'reinforce'")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 < self.clip < 1, "clip", "must be in (0, 1)")
        need(0 <= self.gamma <= 1, "gamma", "must be in [0, 1]")
        need(0 <= self.gae_lambda <= 1, "gae_lambda", "must be in [0, 1]")
        need(min(self.ent_coef, self.vf_coef, self.click_coef, self.model_coef) >= 0, "ent_coef",
             "ent_coef, vf_coef, click_coef and model_coef must be >= 0")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(0 < self.minibatch <= self.rollout, "minibatch", "need 0 < minibatch <= rollout")
        need(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        need(self.target_kl > 0, "target_kl", "must be > 0")
        need(self.importance_cap >= 1, "importance_cap", "must be >= 1")
        need(self.creative_temperature > 0, "creative_temperature", "must be > 0")
        need(self.creative_prior_impressions >= 0, "creative_prior_impressions", "must be >= 0")
        need(0 < self.explore_eps < 1, "explore_eps", "must be in (0, 1): propensities must stay > 0")
        need(0 < self.creative_eps < 1, "creative_eps", "must be in (0, 1): propensities must stay > 0")
        need(self.creative_value_weight >= 0, "creative_value_weight", "must be >= 0 (0: the creative head alone)")
        need(self.creative_optimism >= 0, "creative_optimism", "must be >= 0")


@dataclass(frozen=True)
class HybridConfig:
    """Architecture and serving settings of the hybrid agent (TOML table ``[hybrid]``)."""

    lstm_hidden: int = 64
    """Width H of the LSTM journey encoder."""
    embed_dim: int = 8
    """Width of the creative embedding fed to the LSTM with each touch."""
    hidden: int = 64
    """Width of the policy, critic and click-model MLPs."""
    segments: int = 8
    """Discovered segments in the state (K); also the targeting choices."""
    segment_profile: bool = True
    """The state's segment group is the posterior accumulated over all the person's requests
    (``agent.segment_profile``); False: the current request's context alone."""
    segment_model: str = "learned"
    """Where ``P(segment | context)`` comes from: ``learned`` — a mixture fitted by EM over each
    person's context counts, K by BIC, refitted every period (``agent/model/segment_em.py``);
    ``simulator`` — a labelled reference for evaluation only: the simulator's own Bayes table,
    indexed by the true segment ids (no real bidder has it)."""
    landscape: bool = True
    """The state carries the competitor landscape of the request's context (median price to beat,
    win rate at a few bids per paid channel, learned online from won prices and lost bids;
    ``agent/model/stats.py``); False: the state layout without those columns."""
    max_touches: int = 16
    """Touches the LSTM reads (L)."""
    ab_variants: int = 4
    """A/B arms people are hashed into."""
    slots_per_period: int = 96
    """Budget slots per period (T): the Q-network acts once per slot."""
    bid_min_usd: float = 0.50
    """Lowest bid, CPM USD (in ``GaelpConfig`` it follows ``budget.bid_min_usd``)."""
    bid_max_usd: float = 10.00
    """Highest bid, CPM USD (in ``GaelpConfig`` it follows ``budget.bid_max_usd``)."""
    value_prior_usd: float = 30.0
    """Prior mean of a conversion's value, USD (5 pseudo-conversions)."""
    conv_prior_rate: float = 0.05
    """Prior eventual conversion rate of a click (the delay model's starting intercept)."""
    conv_prior_delay_days: float = 5.0
    """Prior mean conversion delay, days."""
    conv_prior_strength: float = 300.0
    """Weight of the conversion prior in matured clicks (see :mod:`agent_service.agent.model.conversion`)."""
    conv_delay_by_features: bool = False
    """The conversion model's delay rate depends on the features (False: one shared rate; see
    ``DelayModelConfig.delay_by_features`` — on the simulator per-feature rates left p̂(conversion)
    uncorrelated with the truth and 2-3x too high)."""
    conv_lr: float = DelayModelConfig.lr
    """Adam learning rate of the conversion model's online steps."""
    conv_beta1: float = DelayModelConfig.beta1
    """Adam first-moment decay of the conversion model."""
    conv_beta2: float = DelayModelConfig.beta2
    """Adam second-moment decay of the conversion model."""
    conv_l2: float = DelayModelConfig.l2
    """L2 penalty on the conversion model's feature weights."""
    conv_buffer_size: int = DelayModelConfig.buffer_size
    """Clicks the conversion model's online learner keeps (oldest evicted first)."""
    conv_batch_size: int = DelayModelConfig.batch_size
    """Minibatch of one online step of the conversion model."""
    conv_refit_every: int = 20
    """Learner rounds between full-batch refits of the conversion model on every buffered click
    (about once a simulated day at the default volume); 0: minibatch steps only."""
    window_days: float = WINDOW_DAYS
    """Attribution window: R_delayed only counts conversions inside it (in the service and the TOML
    file it is ``join.window_days``)."""
    decision_window: int = 300_000
    """Decisions the learner keeps for their rewards to be completed (the keyed replay)."""
    update_every: int = 1024
    """New decisions between policy updates (and weight publications)."""
    dqn: DQNConfig = field(default_factory=DQNConfig)
    """The bid-multiplier Q-learner."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """The creative × channel × target policy learner."""

    def __post_init__(self) -> None:
        for name in ("lstm_hidden", "embed_dim", "hidden", "segments", "max_touches", "ab_variants",
                     "slots_per_period", "decision_window", "update_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hybrid.{name}", "must be >= 1")
        if not 0 < self.bid_min_usd < self.bid_max_usd:
            raise ConfigError("hybrid.bid_min_usd", "need 0 < bid_min_usd < bid_max_usd")
        if self.value_prior_usd <= 0:
            raise ConfigError("hybrid.value_prior_usd", "must be > 0")
        if not 0 < self.conv_prior_rate < 1:
            raise ConfigError("hybrid.conv_prior_rate", "must be in (0, 1)")
        if self.conv_prior_delay_days <= 0 or self.window_days <= 0:
            raise ConfigError("hybrid.window_days", "window_days and conv_prior_delay_days must be > 0")
        try:
            self.delay_config()
        except ConfigError as exc:  # name the key as it is written here
            name = exc.key.removeprefix("delay.")
            key = {"window_days": "window_days", "prior_mean_delay_days": "conv_prior_delay_days"}.get(
                name, f"conv_{name}")
            raise ConfigError(f"hybrid.{key}", exc.reason) from None
        if self.conv_refit_every < 0:
            raise ConfigError("hybrid.conv_refit_every", "must be >= 0")
        if self.segment_model not in ("learned", "simulator"):
            raise ConfigError("hybrid.segment_model", "must be 'learned' or 'simulator'")
        if self.decision_window < self.ppo.rollout:
            raise ConfigError("hybrid.decision_window", "must be >= ppo.rollout")

    def delay_config(self, seed: int = 0) -> DelayModelConfig:
        return DelayModelConfig(lr=self.conv_lr, beta1=self.conv_beta1, beta2=self.conv_beta2, l2=self.conv_l2,
                                prior_rate=self.conv_prior_rate, prior_mean_delay_days=self.conv_prior_delay_days,
                                delay_by_features=self.conv_delay_by_features, window_days=self.window_days,
                                buffer_size=self.conv_buffer_size, batch_size=self.conv_batch_size, seed=seed)
