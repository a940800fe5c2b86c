"""Env wrappers chained in the config (`env.wrappers`), around any backend's `VecEnv`.

A wrapper sees every batch the actor (or the evaluator) receives and every action it sends, keyed by env id, so
it works with EnvPool's asynchronous batches as well as with the serial vectorizer. Built in: `frame_stack`. A
user's wrapper is `package.module:Class`, a `VecEnvWrapper` subclass built as `Class(env, **kwargs)`.

Config form: a list whose items are a name (`frame_stack`), or a one-key mapping from the name to its argument
(`{frame_stack: 4}`, `{my_pkg.wrappers:ClipObs: {limit: 5.0}}`). Wrappers apply in list order, the first one
innermost, to the training and the evaluation envs alike.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import numpy as np

from jaxrl_dist.envs.spec import EnvSpec, StepBatch
from jaxrl_dist.errors import UserError
from jaxrl_dist.plugins import import_object, is_plugin_path


class VecEnvWrapper:
    """Delegates to the wrapped `VecEnv`; subclasses override `spec` and the `on_recv` / `on_send` hooks.

    Attributes:
        env: the wrapped env.
        spec: the spec the wrapper presents (by default the wrapped env's; set it in `__init__` when the
            observation changes).
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.spec: EnvSpec = env.spec
        self.num_envs: int = env.num_envs
        self.batch_size: int = env.batch_size

    def on_recv(self, batch: StepBatch) -> StepBatch:
        """Transforms a received batch (rows are `batch.env_ids`; `batch.first` marks new episodes)."""
        return batch

    def on_send(self, actions: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        """Transforms the actions about to be sent to `env_ids`."""
        return actions

    def reset(self) -> None:
        self.env.reset()

    def recv(self, timeout: float = 60.0) -> StepBatch:
        return self.on_recv(self.env.recv(timeout))

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        self.env.send(self.on_send(actions, env_ids), env_ids)

    def close(self) -> None:
        self.env.close()


class FrameStack(VecEnvWrapper):
    """The last `k` observations of each env, oldest first: observations `[k, *obs_shape]`.

    An episode's first observation fills all `k` slots, so a stack never mixes two episodes.
    """

    def __init__(self, env: Any, k: int) -> None:
        super().__init__(env)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UserError(f"env wrapper frame_stack: {k!r} is not allowed; allowed: an integer >= 1")
        inner = env.spec
        self.spec = dataclasses.replace(inner, obs_shape=(k, *inner.obs_shape))
        self._stacks = np.zeros((env.num_envs, k, *inner.obs_shape), inner.obs_dtype)

    def on_recv(self, batch: StepBatch) -> StepBatch:
        ids, stacks = batch.env_ids, self._stacks
        stacks[ids] = np.concatenate([stacks[ids, 1:], batch.obs[:, None]], axis=1)
        if batch.first.any():
            stacks[ids[batch.first]] = batch.obs[batch.first][:, None]
        return batch._replace(obs=stacks[ids])


BUILTIN: dict[str, Callable[..., VecEnvWrapper]] = {"frame_stack": FrameStack}


def parse_wrappers(items: list[Any]) -> list[tuple[str, Any]]:
    """`env.wrappers` -> `[(name, argument or None)]`, each name a built-in or an importable `VecEnvWrapper`.

    Raises:
        UserError: A malformed item, an unknown name, or a custom class that is no `VecEnvWrapper` or does not take
            its keyword arguments; the message names the item by its index.
    """
    parsed = []
    for i, item in enumerate(items):
        key = f"env.wrappers[{i}]"
        if isinstance(item, str):
            name, arg = item, None
        elif isinstance(item, dict) and len(item) == 1:
            ((name, arg),) = item.items()
        else:
            raise UserError(f"config key '{key}': {item!r} is not allowed; use a name or a one-key mapping "
                            f"{{name: argument}}")
        if is_plugin_path(str(name)):
            cls = import_object(str(name), f"config key '{key}': custom wrapper")
            if not (isinstance(cls, type) and issubclass(cls, VecEnvWrapper)):
                raise UserError(f"config key '{key}': '{name}' is not a subclass of jaxrl_dist.envs.VecEnvWrapper")
            if arg is not None and not isinstance(arg, dict):
                raise UserError(f"config key '{key}': the argument of a custom wrapper is a mapping of keyword "
                                f"arguments, got {arg!r}")
            try:
                inspect.signature(cls).bind(None, **(arg or {}))
            except TypeError as e:
                raise UserError(f"config key '{key}': '{name}' does not take {sorted(arg or {})}: {e}") from None
        elif name not in BUILTIN:
            raise UserError(f"config key '{key}': wrapper '{name}' is unknown; allowed: {', '.join(BUILTIN)}, or "
                            f"'package.module:Class' of a VecEnvWrapper")
        elif isinstance(arg, bool) or not isinstance(arg, int) or arg < 1:
            raise UserError(f"config key '{key}': {name} {arg!r} is not allowed; allowed: an integer >= 1, "
                            f"e.g. {{{name}: 4}}")
        parsed.append((str(name), arg))
    return parsed


def apply_wrappers(env: Any, items: list[Any]) -> Any:
    """Wraps `env` in the configured wrappers, the first item innermost."""
    for name, arg in parse_wrappers(items):
        if name in BUILTIN:
            env = BUILTIN[name](env, arg)
        else:
            env = import_object(name, "custom wrapper")(env, **(arg or {}))
    return env
