"""Tiny `BaseEnv`s with answers known in closed form, for tests of envs, algorithms and whole training runs.

Usable from configs as `jaxrl_dist.envs.fake:ConstantRewardEnv` and so on. All are deterministic: seeds are accepted
and ignored, actions only matter where stated.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxrl_dist.envs.base import BaseEnv, Box, Discrete


class ConstantRewardEnv(BaseEnv):
    """Reward 1 every step, a constant observation, never terminates; the time limit truncates at `horizon`.

    Truncation is left to the vectorizer (via `max_episode_steps`), which is exactly what this env tests. Because
    the observation never changes, a value function that bootstraps through truncation must converge to
    V = 1 / (1 - gamma) everywhere; one that treats truncation as termination cannot fit a single value.

    Args:
        obs_dim: length of the observation (all ones, float32 [obs_dim]).
        horizon: `max_episode_steps`, the episode length.
    """

    action_space = Discrete(2)

    def __init__(self, obs_dim: int = 2, horizon: int = 10) -> None:
        self.observation_space = Box(0.0, 1.0, shape=(obs_dim,))
        self.max_episode_steps = horizon
        self._obs = np.ones(obs_dim, np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self._obs.copy()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        return self._obs.copy(), 1.0, False, False


class CountdownEnv(BaseEnv):
    """Terminates after `length` steps with reward 1 on the final step only; actions are ignored.

    The observation is one-hot over the number of steps remaining (float32 [length + 1]; index `length` right
    after reset, index 0 in the terminal observation). With k steps to go the true value is gamma^(k - 1), and
    the undiscounted episode return is 1 with length `length`.

    Args:
        length: steps per episode (>= 1).
    """

    action_space = Discrete(2)

    def __init__(self, length: int = 5) -> None:
        if length < 1:
            raise ValueError(f"CountdownEnv(length={length}): length must be >= 1")
        self.length = length
        self.observation_space = Box(0.0, 1.0, shape=(length + 1,))
        self._remaining = length

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length + 1, np.float32)
        obs[self._remaining] = 1.0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._remaining = self.length
        return self._obs()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self._remaining -= 1
        done = self._remaining == 0
        return self._obs(), float(done), done, False


class ContinuousTargetEnv(BaseEnv):
    """A continuous bandit repeated for `length` steps: reward -(a - target)^2, then termination.

    The optimum is a = target at every step (return 0), and the optimal Q is Q*(s, a) = -(a - target)^2 at every
    step because the optimal future return is 0. The observation is the constant [target] (float32 [1]).

    Args:
        target: the best action, inside the action bounds [-2, 2].
        length: steps per episode (>= 1); the episode terminates after the last.
    """

    action_space = Box(-2.0, 2.0, shape=(1,))
    observation_space = Box(-2.0, 2.0, shape=(1,))

    def __init__(self, target: float = 0.5, length: int = 10) -> None:
        if not -2.0 <= target <= 2.0 or length < 1:
            raise ValueError(f"ContinuousTargetEnv(target={target}, length={length}): need |target| <= 2, length >= 1")
        self.target = float(target)
        self.length = length
        self._obs = np.array([target], np.float32)
        self._t = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._t = 0
        return self._obs.copy()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self._t += 1
        a = float(np.asarray(action, np.float64).reshape(-1)[0])
        return self._obs.copy(), -((a - self.target) ** 2), self._t >= self.length, False


class FailingEnv(ConstantRewardEnv):
    """`ConstantRewardEnv` whose `step` raises after `fail_after` steps: tests that a crashed role stops the run."""

    def __init__(self, fail_after: int = 100, obs_dim: int = 2, horizon: int = 10) -> None:
        super().__init__(obs_dim, horizon)
        self.fail_after, self._steps = fail_after, 0

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self._steps += 1
        if self._steps > self.fail_after:
            raise RuntimeError(f"FailingEnv failed on purpose after {self.fail_after} steps")
        return super().step(action)


class SlowEnv(ConstantRewardEnv):
    """`ConstantRewardEnv` whose every step costs about `step_ms` milliseconds: a stand-in for a Python simulator,
    to measure what stepping envs in subprocesses gains (`python -m jaxrl_dist.bench throughput`).

    The cost is CPU work by default, a fixed amount of Python arithmetic (about 1 ms per `step_ms` on a 2024 x86
    core; a slower or busier core takes longer), so workers gain at most the number of free cores; with
    `sleep=True` the step waits instead, like an env that waits on a simulator process or a device.

    Args:
        step_ms: cost of one step in milliseconds.
        sleep: wait instead of computing.
        obs_dim: length of the observation.
        horizon: `max_episode_steps`.
    """

    ITERATIONS_PER_MS = 28_000  # of the loop in `_work`, measured on the machine the figures in docs/benchmarks.md come from

    def __init__(self, step_ms: float = 1.0, sleep: bool = False, obs_dim: int = 4, horizon: int = 200) -> None:
        super().__init__(obs_dim, horizon)
        self.step_ms, self.sleep = float(step_ms), bool(sleep)
        self._iterations = int(self.step_ms * self.ITERATIONS_PER_MS)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        if self.sleep:
            time.sleep(self.step_ms / 1000.0)
        else:
            _work(self._iterations)
        return super().step(action)


def _work(iterations: int) -> float:
    x = 0.0
    for _ in range(iterations):
        x = x * 0.5 + 1.0
    return x


class SeedEchoEnv(BaseEnv):
    """Observes the seed of its latest reset ([-1] for None) and its step count; episodes last `length` steps.

    Tests the seeding rule through any backend, subprocess workers included: instance i observes seed + i after its
    first reset and -1 after every later one.
    """

    observation_space = Box(-1.0, np.inf, shape=(2,))
    action_space = Discrete(2)

    def __init__(self, length: int = 2) -> None:
        self.length, self._seed, self._t = length, -1.0, 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._seed, self._t = (-1.0 if seed is None else float(seed)), 0
        return np.array([self._seed, 0.0], np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self._t += 1
        return np.array([self._seed, self._t], np.float32), 0.0, self._t >= self.length, False
