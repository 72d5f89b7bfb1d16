"""``GaelpVectorEnv``: ``num_envs`` independent simulated campaigns stepped together, batched.

A ``gymnasium.vector.VectorEnv`` whose copies are lanes of one vectorised engine (not a loop
over single environments): one ``step`` resolves one opportunity per copy in one batch.
Spaces are the batched versions of ``GaelpEnv``'s (actions: a dict of arrays with leading
dimension ``num_envs``; ``bid`` has shape (num_envs, 1)). Autoreset is gymnasium's default
``NEXT_STEP``: after a copy's episode ends, its next ``step`` ignores that copy's action and
returns the first observation of its next day (reward 0, not terminated). ``info`` holds one
array per key (see ``simulators.env_core``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from simulators.calibration import Calibration
from simulators.env_core import EnvConfig, EnvCore
from simulators.gym_env import action_space, observation_space
from simulators.hindsight import HindsightResult
from simulators.observation import ServiceInputs

__all__ = ["GaelpVectorEnv"]


class GaelpVectorEnv(gym.vector.VectorEnv[np.ndarray, dict[str, np.ndarray], np.ndarray]):
    """See the module docstring.

    :param num_envs: independent copies (lanes).
    :param config: environment settings.
    :param calibration: a loaded calibration (default: ``config.calibration``).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 16, config: EnvConfig | None = None,
                 calibration: Calibration | None = None) -> None:
        self.num_envs = num_envs
        self.config = config or EnvConfig()
        self.core = EnvCore(self.config, num_envs, calibration)
        self.single_observation_space = observation_space(self.core)
        self.single_action_space = action_space(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.feature_names = self.core.feature_names
        self._all = np.arange(num_envs)
        self._needs_reset = np.ones(num_envs, dtype=bool)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        """The engine (ground truth: evaluation code only)."""
        return self.core.engine

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """New worlds for every copy (seeded: reproducible), each at its first day."""
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self.core.build(int(self.np_random.integers(2**31)) if seed is None else seed)
        self.core.start_day(self._all)
        self._needs_reset[:] = False
        return self.core.observe(self._all), {"event_time": self.core.current(self._all).t}

    def step(self, actions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                           dict[str, Any]]:
        """One opportunity per copy (copies whose episode just ended start their next day instead)."""
        n = self.num_envs
        obs = np.empty((n, len(self.feature_names)), dtype=np.float32)
        reward = np.zeros(n)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        info: dict[str, Any] = {}
        resetting = self._all[self._needs_reset]
        if resetting.size:
            self.core.start_day(resetting)
            obs[resetting] = self.core.observe(resetting)
        live = self._all[~self._needs_reset]
        if live.size:
            bid = np.asarray(actions["bid"], dtype=np.float64).reshape(n, -1)[:, 0]
            o, r, te, tr, inf = self.core.step(live, bid[live], np.asarray(actions["creative"])[live],
                                               np.asarray(actions["channel"])[live], np.asarray(actions["target"])[live])
            obs[live], reward[live], term[live], trunc[live] = o, r, te, tr
            present = ~self._needs_reset
            for k, v in inf.items():
                full = np.zeros(n, dtype=v.dtype)
                full[live] = v
                info[k] = full
                info[f"_{k}"] = present
        self._needs_reset = term | trunc
        return obs, reward, term, trunc, info

    def hindsight(self, env_index: int, mode: str = "myopic", exact: bool = False) -> HindsightResult:
        """Hindsight optimum of copy ``env_index``'s last finished day."""
        return self.core.hindsight(env_index, mode, exact)

    def service_inputs(self) -> ServiceInputs:
        """What the service would know about every copy's current opportunity (rows in copy order).

        Valid between steps for copies whose episode is running (after an episode ends, the row
        is the next day's first opportunity only once the autoreset step has happened)."""
        return self.core.service_inputs(self._all)
