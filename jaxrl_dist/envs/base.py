"""The custom-env API: subclass `BaseEnv`, describe it with `Box` / `Discrete`, run it with backend "custom".

A user env is a plain single-instance Python class; `jaxrl_dist.envs.serial` vectorizes it (in the actor's thread, or
in worker processes: `subproc`) and gives it EnvPool's semantics (next-step autoreset, env ids, async batches, time
limit). `GymnasiumEnv` adapts a `gymnasium.Env` (a registered id, a subclass, what a factory returns) to the same API,
so gymnasium envs go through the same vectorizers; `jaxrl_dist.envs.loading` says which `env.id` forms exist.

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
    `__init__`). gymnasium's spaces work too, duck-typed: a Dict observation space is flattened (`observations`),
    a MultiDiscrete action space gives `[D]` int actions. The vectorizer applies `max_episode_steps` as a time limit
    (truncation), resets automatically after an episode ends, and seeds instance i with `seed + i` on its first
    reset and `None` afterwards, so an env keeps one RNG stream across episodes.

    Attributes:
        observation_space: Box (or Discrete, or gymnasium's Dict) of one observation.
        action_space: Discrete, Box (or gymnasium's MultiDiscrete) of one action.
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
        """Applies one action (int for Discrete, float32 [*shape] for Box, int [D] for MultiDiscrete).

        Returns:
            (obs, reward, terminated, truncated): terminated means a terminal state was reached; truncated means the
            episode was cut for another reason. The time limit need not be handled here.
        """

    def close(self) -> None:
        """Releases resources; the default does nothing."""


class GymnasiumEnv(BaseEnv):
    """Adapts one `gymnasium.Env` instance to `BaseEnv`: a registered id (`make`), a `gymnasium.Env` subclass or
    what a factory function returned (`jaxrl_dist.envs.loading`).

    The spaces are the gymnasium env's own (`spec_from_spaces` reads them; `observations` checks and flattens the
    observation space). A `TimeLimit` wrapper's truncation is passed through; `max_episode_steps` is the limit of
    the env's `spec` (`gymnasium.make` sets it), 0 without one.

    Args:
        env: the gymnasium env.
        name: the env's id, for messages.
    """

    def __init__(self, env: Any, name: str) -> None:
        self._env = env  # the name video.frame_getter looks for
        self._name = name
        spaces: Any = (env.observation_space, env.action_space)  # gymnasium's, duck-typed like ours
        self.observation_space, self.action_space = spaces
        limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        self.max_episode_steps = int(limit or 0)
        self._discrete = is_discrete_space(self.action_space)
        self._action_dtype = getattr(self.action_space, "dtype", None)

    @classmethod
    def make(cls, env_id: str, max_episode_steps: int = 0, **kwargs: Any) -> GymnasiumEnv:
        """`gymnasium.make(env_id, **kwargs)` adapted, with its time limit overridden when `max_episode_steps` > 0.

        Raises:
            UserError: kwargs that the env's constructor does not take.
        """
        import gymnasium  # Imported here: only the Python backends need it.

        try:
            env = gymnasium.make(env_id, max_episode_steps=max_episode_steps or None, **kwargs)
        except TypeError as e:
            if "argument" not in str(e):
                raise
            raise UserError(f"gymnasium env '{env_id}': kwargs {sorted(kwargs)} not accepted: {e}") from None
        return cls(env, env_id)

    def reset(self, seed: int | None = None) -> Any:
        out = self._env.reset(seed=seed)
        if type(out) is not tuple or len(out) != 2:
            raise UserError(f"env '{self._name}': reset() returned {describe(out)}; expected (obs, info), "
                            "gymnasium's API")
        return out[0]

    def step(self, action: Any) -> tuple[Any, Any, Any, Any]:
        if self._discrete:
            action = int(action)
        elif self._action_dtype is not None:  # Box (float32 from the policy, float64 for MuJoCo), MultiDiscrete
            action = np.asarray(action, self._action_dtype)
        out = self._env.step(action)
        if type(out) is not tuple or len(out) != 5:
            raise UserError(f"env '{self._name}': step() returned {describe(out)}; expected (obs, reward, "
                            "terminated, truncated, info), gymnasium's API")
        return out[0], out[1], out[2], out[3]

    def render(self) -> Any:
        """The gymnasium env's frame (made with `render_mode="rgb_array"`)."""
        return self._env.render()

    def close(self) -> None:
        self._env.close()


def describe(value: Any) -> str:
    """How error messages name a returned value: `a tuple of 5`, `ndarray`, `NoneType`."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__
