"""Observation spaces of the Python backends (custom and gymnasium): which are accepted, and how a Dict is flattened.

Accepted as an env's `observation_space`: a Box (any shape and dtype), a Discrete (a scalar int32 observation), and a
Dict, whose entries may be Box, Discrete, MultiBinary or Dict again. Everything else (Tuple, Text, Graph, Sequence,
MultiDiscrete, a MultiBinary outside a Dict) is refused with a one-line error naming the space.

A Dict observation is delivered as one float32 vector, so that every network torso, replay buffer and export path
sees a plain Box: the entries in sorted key order at every level of nesting (whatever order the space declares them
in), a Box raveled in row-major order, a Discrete one-hot, a MultiBinary as 0 / 1. It is gymnasium's `flatten` layout
but for the key order, which gymnasium takes from the space (a plain dict is sorted there, an OrderedDict is not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrl_dist.envs.base import BaseEnv, Box
from jaxrl_dist.errors import UserError

_TOP = "allowed: Box, Discrete, or Dict (flattened into one float32 vector)"
_IN_DICT = "allowed in a Dict: Box, Discrete, MultiBinary, Dict"


def is_dict_space(space: Any) -> bool:
    """True for gymnasium's Dict space (duck-typed: a mapping of subspaces)."""
    return isinstance(getattr(space, "spaces", None), Mapping)


def _is_box(space: Any) -> bool:
    return hasattr(space, "low") and hasattr(space, "high") and hasattr(space, "shape")


def _is_discrete(space: Any) -> bool:
    # MultiBinary has `n` and no `low` too, but a non-empty shape; MultiDiscrete has `nvec`.
    return hasattr(space, "n") and not hasattr(space, "low") and not hasattr(space, "nvec") and \
        tuple(getattr(space, "shape", ())) == ()


def _is_multi_binary(space: Any) -> bool:
    return hasattr(space, "n") and not hasattr(space, "low") and tuple(getattr(space, "shape", ())) != ()


def adapt_observations(env: BaseEnv, name: str) -> BaseEnv:
    """Returns `env` if its observation space is accepted as it is, `FlatDictObs(env)` for a Dict.

    Raises:
        UserError: for any other space (the message names it and what is allowed).
    """
    space = env.observation_space
    if is_dict_space(space):
        return FlatDictObs(env, name)
    if not (_is_box(space) or _is_discrete(space)):
        raise UserError(f"env '{name}': observation space {space} is not supported; {_TOP}")
    return env


class DictFlattener:
    """Maps observations of one Dict space to float32 vectors [size] (module doc for the layout).

    Args:
        space: the Dict space.
        name: the env's id, for messages.

    Attributes:
        space: the Box of the flat vectors, bounds taken from the entries (a Discrete's one-hot in [0, 1]).
    """

    def __init__(self, space: Any, name: str) -> None:
        self._name = name
        # (key path, kind, start, stop, Discrete start): one per leaf, in sorted key order.
        self._parts: list[tuple[tuple[str, ...], str, int, int, int]] = []
        lows: list[np.ndarray] = []
        highs: list[np.ndarray] = []
        self._walk(space, (), lows, highs)
        size = self._parts[-1][3] if self._parts else 0
        low = np.concatenate(lows) if lows else np.zeros(0)
        high = np.concatenate(highs) if highs else np.zeros(0)
        self.space = Box(low, high, shape=(size,), dtype=np.float32)

    def _walk(self, space: Any, path: tuple[str, ...], lows: list[np.ndarray], highs: list[np.ndarray]) -> None:
        start = self._parts[-1][3] if self._parts else 0
        if is_dict_space(space):
            for key in sorted(space.spaces, key=str):
                self._walk(space.spaces[key], (*path, key), lows, highs)
            return
        if _is_box(space):
            size, kind, offset = int(np.prod(space.shape)), "box", 0
            low = np.ravel(np.broadcast_to(space.low, space.shape)).astype(np.float32)
            high = np.ravel(np.broadcast_to(space.high, space.shape)).astype(np.float32)
        elif _is_discrete(space) or _is_multi_binary(space):  # a one-hot, or 0 / 1 flags: both in [0, 1]
            if _is_discrete(space):
                size, kind, offset = int(space.n), "one_hot", int(getattr(space, "start", 0))
            else:
                size, kind, offset = int(np.prod(space.shape)), "box", 0
            low, high = np.zeros(size, np.float32), np.ones(size, np.float32)
        else:
            key = ".".join(str(k) for k in path)
            raise UserError(f"env '{self._name}': observation space Dict key '{key}': {space} is not supported; "
                            f"{_IN_DICT}")
        lows.append(low)
        highs.append(high)
        self._parts.append((path, kind, start, start + size, offset))

    def __call__(self, obs: Any) -> np.ndarray:
        """One Dict observation -> float32 [size].

        Raises:
            UserError: if the observation lacks a key of the space or an entry does not fit its part.
        """
        out = np.zeros(self.space.shape, np.float32)
        try:
            for path, kind, start, stop, offset in self._parts:
                value = obs
                for key in path:
                    value = value[key]
                if kind == "box":
                    out[start:stop] = np.ravel(value)
                else:
                    out[start + int(value) - offset] = 1.0
        except (KeyError, IndexError, TypeError, ValueError) as e:
            key = ".".join(str(k) for k in path)
            raise UserError(f"env '{self._name}': observation entry '{key}' does not fit its Dict space: "
                            f"{type(e).__name__}: {e}") from None
        return out


class FlatDictObs(BaseEnv):
    """A `BaseEnv` with Dict observations seen through `DictFlattener`; everything else is the wrapped env's."""

    def __init__(self, env: BaseEnv, name: str) -> None:
        self._env = env  # the name video.frame_getter looks for
        self._flatten = DictFlattener(env.observation_space, name)
        self.observation_space = self._flatten.space
        self.action_space = env.action_space
        self.max_episode_steps = int(getattr(env, "max_episode_steps", 0) or 0)

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self._flatten(self._env.reset(seed=seed))

    def step(self, action: Any) -> Any:
        out = self._env.step(action)
        if isinstance(out, tuple) and out:  # the stepper checks the rest of the result
            return (self._flatten(out[0]), *out[1:])
        return out

    def close(self) -> None:
        self._env.close()
