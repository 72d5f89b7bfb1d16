"""``GaelpEnv``: the simulated campaign as a ``gymnasium.Env``, one ad opportunity per step.

Observation: float32 vector in [-1, 1] — the service's state vector (``BASE_FEATURES``, same
order and meaning as ``agent_service.agent.model.opportunity``) plus ``EXTRA_FEATURES`` and the A/B arm
one-hot (``env.feature_names``); never ground truth.
Action: ``Dict(bid=Box(0, 10, (1,)) CPM USD, creative=Discrete(C), channel=Discrete(3),
target=Discrete(K + 1))`` — a bid below the minimum ($0.50) means no ad; channel 0 organic,
1 paid search, 2 social (``agent_service.config.CHANNELS``); target K means everyone.
Episode: one budget day; ``terminated`` when the budget cannot pay a minimum bid, ``truncated``
at the end of the day. ``reset(seed=s)`` builds a new world from ``s``; ``reset()`` moves on to
the next day of the same world (journeys carry over, the budget is renewed).
Reward and ``info``: see ``simulators.env_core``. ``env.hindsight()`` gives the hindsight
optimum of the last finished day.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from simulators.calibration import Calibration
from simulators.env_core import EnvConfig, EnvCore
from simulators.hindsight import HindsightResult
from simulators.observation import ServiceInputs

__all__ = ["GaelpEnv", "action_space", "observation_space"]


def observation_space(core: EnvCore) -> gym.spaces.Box:
    """The observation space of one opportunity."""
    return gym.spaces.Box(-1.0, 1.0, shape=(len(core.feature_names),), dtype=np.float32)


def action_space(core: EnvCore) -> gym.spaces.Dict:
    """The action space of one opportunity."""
    return gym.spaces.Dict({
        "bid": gym.spaces.Box(0.0, core.cfg.bid_max_usd, shape=(1,), dtype=np.float32),
        "creative": gym.spaces.Discrete(core.n_creatives),
        "channel": gym.spaces.Discrete(3),
        "target": gym.spaces.Discrete(core.n_segments + 1),
    })


class GaelpEnv(gym.Env[np.ndarray, dict[str, Any]]):
    """See the module docstring.

    :param config: environment settings.
    :param calibration: a loaded calibration (default: ``config.calibration``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, calibration: Calibration | None = None) -> None:
        self.config = config or EnvConfig()
        self.core = EnvCore(self.config, 1, calibration)
        self.observation_space = observation_space(self.core)
        self.action_space = action_space(self.core)
        self.feature_names = self.core.feature_names
        self._lane = np.zeros(1, dtype=np.int64)
        self._done = True

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        """The engine (ground truth: evaluation code only)."""
        return self.core.engine

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a day: a new world when seeded (or on the first reset), else the next day."""
        super().reset(seed=seed)
        if seed is not None or self.core.engine is None:
            self.core.build(int(self.np_random.integers(2**31)) if seed is None else seed)
        self.core.start_day(self._lane)
        self._done = False
        obs = self.core.observe(self._lane)[0]
        return obs, {"event_time": int(self.core.current(self._lane).t[0]), "day_start": int(self.core.day_start[0])}

    def step(self, action: dict[str, Any]) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act on the current opportunity."""
        if self._done:
            raise RuntimeError("call reset() before step()")
        bid = np.asarray(action["bid"], dtype=np.float64).reshape(-1)[:1]
        obs, reward, term, trunc, info = self.core.step(
            self._lane, bid, np.asarray([action["creative"]]), np.asarray([action["channel"]]),
            np.asarray([action["target"]]))
        self._done = bool(term[0] or trunc[0])
        return obs[0], float(reward[0]), bool(term[0]), bool(trunc[0]), {k: _scalar(v[0]) for k, v in info.items()}

    def hindsight(self, mode: str = "myopic", exact: bool = False) -> HindsightResult:
        """Hindsight optimum of the last finished day (see ``simulators.hindsight``)."""
        return self.core.hindsight(0, mode, exact)

    def service_inputs(self) -> ServiceInputs:
        """What the service would know about the current opportunity (one row), to build another state."""
        return self.core.service_inputs(self._lane)


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
