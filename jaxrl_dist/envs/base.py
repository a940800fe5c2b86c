"""The custom-env API: subclass `BaseEnv`, describe it with `Box` / `Discrete`, run it with backend "custom".

A user env is a plain single-instance Python class; `jaxrl_dist.envs.serial.SerialVecEnv` vectorizes it and gives it
EnvPool's semantics (next-step autoreset, env ids, async batches, time limit). `GymnasiumEnv` adapts any gymnasium id
to the same API, so gymnasium envs go through the same vectorizer.

Example:
    class Corridor(BaseEnv):
        observation_space = Box(0.0, 1.0, shape=(1,))
        action_space = Discrete(2)
        max_episode_steps = 100
        def reset(self, seed=None): ...
        def step(self, action): ...

    make_env("my_pkg.envs:Corridor", num_envs=8)
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from jaxrl_dist.envs.spec import is_discrete_space
from jaxrl_dist.errors import UserError


class Discrete:
    """The actions {0, 1, ..., n - 1}.

    Attributes:
        n: number of actions (>= 1).
    """

    def __init__(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError(f"Discrete(n={n}): n must be >= 1")
        self.n = int(n)
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.int32)

    def sample(self, rng: np.random.Generator) -> int:
        """A uniformly random action."""
        return int(rng.integers(self.n))

    def __repr__(self) -> str:
        return f"Discrete({self.n})"


class Box:
    """A box in R^shape (or an integer box), bounds broadcast to `shape`.

    Attributes:
        low: array [*shape] of `dtype`, lower bounds (may be -inf).
        high: array [*shape] of `dtype`, upper bounds (may be +inf).
        shape: the shape of one element.
        dtype: numpy dtype of elements.
    """

    def __init__(self, low: Any, high: Any, shape: tuple[int, ...] | None = None, dtype: Any = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        if shape is None:
            shape = np.broadcast_shapes(np.shape(low), np.shape(high))
        self.shape = tuple(int(x) for x in shape)
        self.low = np.broadcast_to(np.asarray(low, self.dtype), self.shape).copy()
        self.high = np.broadcast_to(np.asarray(high, self.dtype), self.shape).copy()
        if np.any(self.low > self.high):
            raise ValueError(f"Box: low {self.low} exceeds high {self.high}")

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random element of the box; infinite bounds are clipped to [-1, 1] for sampling."""
        low = np.where(np.isfinite(self.low), self.low, -1.0)
        high = np.where(np.isfinite(self.high), self.high, 1.0)
        return rng.uniform(low, high, self.shape).astype(self.dtype)

    def __repr__(self) -> str:
        return f"Box(shape={self.shape}, dtype={self.dtype.name})"


class BaseEnv(abc.ABC):
    """A single environment instance; subclass it and name it as `package.module:ClassName` in the config.

    Subclasses set `observation_space`, `action_space` and optionally `max_episode_steps` (as class attributes or in
    `__init__`). The vectorizer applies `max_episode_steps` as a time limit (truncation), resets automatically after
    an episode ends, and seeds instance i with `seed + i` on its first reset and `None` afterwards, so an env keeps
    one RNG stream across episodes.

    Attributes:
        observation_space: Box of one observation.
        action_space: Discrete or Box of one action.
        max_episode_steps: time limit in steps; 0 for none (make_env's `max_episode_steps` overrides it).
    """

    observation_space: Box
    action_space: Discrete | Box
    max_episode_steps: int = 0

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Starts an episode; returns the first observation [*observation_space.shape]."""

    @abc.abstractmethod
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        """Applies one action (int for Discrete, float32 [*shape] for Box).

        Returns:
            (obs, reward, terminated, truncated): terminated means a terminal state was reached; truncated means the
            episode was cut for another reason. The time limit need not be handled here.
        """

    def close(self) -> None:
        """Releases resources; the default does nothing."""


class GymnasiumEnv(BaseEnv):
    """Adapts one `gymnasium.make(env_id)` instance to `BaseEnv`.

    gymnasium's `TimeLimit` wrapper reports the time limit as `truncated`, which is passed through; the limit itself
    is `max_episode_steps` if > 0, else the id's registered default.

    Args:
        env_id: a registered gymnasium id, e.g. "CartPole-v1".
        max_episode_steps: overrides the registered time limit when > 0.
        **kwargs: passed to `gymnasium.make`.
    """

    def __init__(self, env_id: str, max_episode_steps: int = 0, **kwargs: Any) -> None:
        import gymnasium  # Imported here: only this backend needs it.

        self._env = gymnasium.make(env_id, max_episode_steps=max_episode_steps or None, **kwargs)
        self.observation_space = _as_box(self._env.observation_space, env_id, "observation")
        self.action_space = _as_action_space(self._env.action_space, env_id)
        limit = self._env.spec.max_episode_steps if self._env.spec is not None else None
        self.max_episode_steps = int(limit or 0)
        self._discrete = isinstance(self.action_space, Discrete)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return np.asarray(obs)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        if self._discrete:
            action = int(action)
        else:
            action = np.asarray(action, self._env.action_space.dtype)
        obs, reward, terminated, truncated, _ = self._env.step(action)
        return np.asarray(obs), float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self._env.close()


def _as_box(space: Any, env_id: str, role: str) -> Box:
    """gymnasium Box -> Box; gymnasium Discrete(n, start) -> scalar int32 Box [start, start + n - 1]."""
    if is_discrete_space(space):
        start = int(getattr(space, "start", 0))
        return Box(start, start + int(space.n) - 1, shape=(), dtype=np.int32)
    if hasattr(space, "low") and hasattr(space, "shape"):
        return Box(space.low, space.high, shape=space.shape, dtype=space.dtype)
    raise UserError(f"gymnasium env '{env_id}': {role} space {space} is not supported; allowed: Box or Discrete")


def _as_action_space(space: Any, env_id: str) -> Discrete | Box:
    if is_discrete_space(space):
        if int(getattr(space, "start", 0)) != 0:
            raise UserError(f"gymnasium env '{env_id}': action space {space} does not start at 0; allowed: from 0")
        return Discrete(int(space.n))
    return _as_box(space, env_id, "action")
