"""What every backend agrees on: the static `EnvSpec` and the per-`recv` `StepBatch`.

`EnvSpec` is all a learner needs to build networks and buffers without touching an env; it is JSON-able so that
checkpoints can rebuild a policy alone. `spec_from_spaces` derives it from either this package's tiny spaces
(`base.Box`, `base.Discrete`) or gymnasium's (EnvPool hands out gymnasium spaces), which share the attribute names
used here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from jaxrl_dist.errors import UserError

# EnvPool reports "no limit" as INT32_MAX; anything this large is treated as unlimited (0 in EnvSpec).
_UNLIMITED_STEPS = 2**31 - 1
ACTION_KINDS = ("discrete", "continuous", "multi_discrete")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment, identical for every backend.

    Attributes:
        obs_shape: shape of one observation, without the batch dimension.
        obs_dtype: numpy dtype name of observations, e.g. "float32", "uint8". float64 envs are reported (and
            delivered) as float32, since JAX runs in float32 by default.
        action_kind: "discrete", "continuous" or "multi_discrete" (a vector of independent discrete choices,
            gymnasium's MultiDiscrete).
        num_actions: number of discrete actions; 0 for continuous and multi_discrete.
        action_shape: shape of one continuous action; () for discrete; (D,) for multi_discrete.
        action_low: flattened lower bounds of continuous actions (len == prod(action_shape)); () otherwise.
        action_high: flattened upper bounds, like `action_low`.
        max_episode_steps: time limit applied by the VecEnv (truncation); 0 if unknown or unlimited.
        nvec: multi_discrete: the number of choices of each of the D dimensions (dimension d takes 0..nvec[d] - 1);
            () otherwise.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_kind: str
    num_actions: int
    action_shape: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int
    nvec: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.action_kind not in ACTION_KINDS:
            raise ValueError(f"action_kind {self.action_kind!r} is not one of {', '.join(map(repr, ACTION_KINDS))}")
        if (self.action_kind == "multi_discrete") != bool(self.nvec) or (
                self.nvec and self.action_shape != (len(self.nvec),)):
            raise ValueError(f"nvec {self.nvec} does not fit action_kind {self.action_kind!r} and action_shape "
                             f"{self.action_shape}: a multi_discrete spec has nvec (D >= 1 sizes) and shape (D,)")

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able dict (tuples become lists; infinite bounds stay floats, which `json` writes)."""
        return {f.name: _listify(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvSpec:
        """Inverse of `to_dict`; also accepts the dict after a JSON round trip."""
        return cls(
            obs_shape=tuple(int(x) for x in d["obs_shape"]),
            obs_dtype=str(d["obs_dtype"]),
            action_kind=str(d["action_kind"]),
            num_actions=int(d["num_actions"]),
            action_shape=tuple(int(x) for x in d["action_shape"]),
            action_low=tuple(float(x) for x in d["action_low"]),
            action_high=tuple(float(x) for x in d["action_high"]),
            max_episode_steps=int(d["max_episode_steps"]),
            nvec=tuple(int(x) for x in d.get("nvec", ())),  # absent in specs saved before MultiDiscrete
        )


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class StepBatch(NamedTuple):
    """One batch of env results, as returned by `VecEnv.recv`. B is the VecEnv's batch_size.

    Two notions of "episode": the learning episode, which `terminated` / `truncated` end and `first` starts, and the
    game, which `game_over` ends and whose return statistics and evaluation report in `score`. They differ only
    where a lost life ends a learning episode (EnvPool Atari with `episodic_life=True`, as CleanRL trains): the env
    then goes on with the same game in a new life, which starts with a `first` row.

    Attributes:
        env_ids: int32 [B], which env each row belongs to; pass it back to `send` with the actions.
        obs: [B, *obs_shape] of `EnvSpec.obs_dtype`: the observation after the step, or the first observation of a
            new episode where `first`.
        reward: float32 [B], reward of the step as the learner gets it (clipped where the env clips, e.g. EnvPool
            Atari's `reward_clip`); 0 where `first`.
        terminated: bool [B], the step reached a terminal state (do not bootstrap); with `episodic_life`, also a
            lost life.
        truncated: bool [B], the episode was cut (time limit); bootstrap from `obs`. Never set with `terminated`:
            a terminal state on the time limit's own step is terminated.
        first: bool [B], `obs` starts a new episode (a new game, or a new life); no transition ends in this row.
        score: float32 [B], the game's own reward of the step, before any clipping (EnvPool Atari's
            `info["reward"]`); the same array as `reward` where the env has no other; 0 where `first`.
        game_over: bool [B], the row ends the game: its episode return is the sum of `score` since the last game
            over. Set only with `terminated` or `truncated`, and with every one of them but a lost life.
    """

    env_ids: np.ndarray
    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    first: np.ndarray
    score: np.ndarray
    game_over: np.ndarray


def obs_dtype_for(dtype: Any) -> np.dtype:
    """The dtype observations are delivered in: float64 narrows to float32, everything else is kept."""
    dt = np.dtype(dtype)
    return np.dtype(np.float32) if dt == np.float64 else dt


def normalize_max_steps(steps: int | None) -> int:
    """Maps None, negative and EnvPool's INT32_MAX "unlimited" to 0; keeps real limits."""
    if steps is None or steps <= 0 or steps >= _UNLIMITED_STEPS:
        return 0
    return int(steps)


def is_discrete_space(space: Any) -> bool:
    """True for our Discrete and gymnasium's Discrete (duck-typed)."""
    # Our Discrete and gymnasium's both have `n` and no `low`; gymnasium's MultiDiscrete has `nvec` instead.
    return hasattr(space, "n") and not hasattr(space, "low")


def spec_from_spaces(observation_space: Any, action_space: Any, max_episode_steps: int, *, name: str) -> EnvSpec:
    """Builds an `EnvSpec` from a Box observation space and a Discrete, Box or MultiDiscrete action space.

    Works on `jaxrl_dist.envs.base` spaces and on gymnasium's (duck-typed by attribute). A Discrete observation
    space (e.g. FrozenLake) becomes a scalar int32 observation.

    Args:
        observation_space: Box (any dtype) or Discrete.
        action_space: Discrete (start 0), Box, or MultiDiscrete (a 1-D `nvec`, start 0).
        max_episode_steps: the time limit in force; 0, negative or INT32_MAX for none.
        name: the env's id, for error messages.

    Raises:
        UserError: for any other kind of space (Dict, Tuple, MultiBinary, ...), in one line naming it.
    """
    if is_discrete_space(observation_space):
        obs_shape: tuple[int, ...] = ()
        obs_dtype = np.dtype(np.int32)
    elif hasattr(observation_space, "low") and hasattr(observation_space, "shape"):
        obs_shape = tuple(int(x) for x in observation_space.shape)
        obs_dtype = obs_dtype_for(observation_space.dtype)
    else:
        raise UserError(
            f"env '{name}': observation space {observation_space} is not supported; allowed: Box or Discrete"
        )
    action = " ".join(str(action_space).split())  # one line, whatever the space's repr
    nvec: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    # gymnasium's MultiBinary has `n` and no `low` too: a Discrete action space is also scalar.
    if is_discrete_space(action_space) and tuple(getattr(action_space, "shape", ()) or ()) == ():
        if int(getattr(action_space, "start", 0)) != 0:
            raise UserError(f"env '{name}': action space {action} does not start at 0; allowed: Discrete(n)")
        kind, num_actions = "discrete", int(action_space.n)
        action_shape: tuple[int, ...] = ()
    elif hasattr(action_space, "nvec"):
        sizes, start = np.asarray(action_space.nvec), np.asarray(getattr(action_space, "start", 0))
        if sizes.ndim != 1 or not sizes.size or np.any(sizes < 1) or np.any(start != 0):
            raise UserError(f"env '{name}': action space {action} is not supported; allowed: MultiDiscrete with a "
                            f"1-D nvec, starting at 0")
        kind, num_actions, nvec = "multi_discrete", 0, tuple(int(x) for x in sizes)
        action_shape = (len(nvec),)
    elif hasattr(action_space, "low") and hasattr(action_space, "shape"):
        kind, num_actions = "continuous", 0
        action_shape = tuple(int(x) for x in action_space.shape)
        low = _flat_bounds(action_space.low, action_shape)
        high = _flat_bounds(action_space.high, action_shape)
    else:
        raise UserError(f"env '{name}': action space {action} is not supported; allowed: Discrete, Box or "
                        f"MultiDiscrete")
    return EnvSpec(
        obs_shape=obs_shape,
        obs_dtype=obs_dtype.name,
        action_kind=kind,
        num_actions=num_actions,
        action_shape=action_shape,
        action_low=low,
        action_high=high,
        max_episode_steps=normalize_max_steps(max_episode_steps),
        nvec=nvec,
    )


def _flat_bounds(bound: Any, shape: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(float(x) for x in np.broadcast_to(np.asarray(bound, np.float64), shape).ravel())
