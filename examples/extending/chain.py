"""A custom environment written outside jaxrl_dist: a chain of cells with a distractor reward at the start.

The agent starts in cell 1 of `0..length`. Stepping left into cell 0 ends the episode with reward `small`; reaching
cell `length` ends it with reward 1. An optimal agent walks right: return 1 in `length - 1` steps. Select it with
`env.id: examples.extending.chain:Chain`.
"""

from __future__ import annotations

import numpy as np

from jaxrl_dist.envs import BaseEnv, Box, Discrete


class Chain(BaseEnv):
    action_space = Discrete(2)  # 0: left, 1: right
    max_episode_steps = 50

    def __init__(self, length: int = 8, small: float = 0.1) -> None:
        self.length, self.small, self.pos = length, small, 1
        self.observation_space = Box(0.0, 1.0, shape=(length + 1,))

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length + 1, np.float32)
        obs[self.pos] = 1.0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.pos = 1
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        self.pos += 1 if int(action) == 1 else -1
        if self.pos == 0:
            return self._obs(), self.small, True, False
        if self.pos == self.length:
            return self._obs(), 1.0, True, False
        return self._obs(), 0.0, False, False
