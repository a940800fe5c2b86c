"""What `env.id` names for the Python backends, as a picklable factory of `BaseEnv` instances.

Backend "custom", `package.module:Name` (with `env.kwargs` as keyword arguments), where Name is
  * a `BaseEnv` subclass: built as `Name(**kwargs)`;
  * a `gymnasium.Env` subclass: built as `Name(**kwargs)`, adapted by `GymnasiumEnv`;
  * a function (any callable but a class) returning a `BaseEnv` or a `gymnasium.Env`, e.g. one that returns
    `gymnasium.make(...)` with wrappers around it: called as `Name(**kwargs)`.
Backend "gymnasium", a registered id (`gymnasium:ID`, or a plain id EnvPool does not know): `gymnasium.make(ID,
**kwargs)`, with `max_episode_steps` as its TimeLimit.

Every instance then has its observation space checked (and a Dict flattened, `observations`). What can be checked
without building an env (the import, the kind of object, the keyword arguments) is checked by `EnvFactory.check` in
the process that reads the config; what a factory returns, and the spaces, when instances are built.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from jaxrl_dist.envs.base import BaseEnv, GymnasiumEnv
from jaxrl_dist.envs.observations import adapt_observations
from jaxrl_dist.errors import UserError
from jaxrl_dist.plugins import import_object

GYMNASIUM_PREFIX = "gymnasium:"
_KINDS = "a BaseEnv subclass, a gymnasium.Env subclass or a function returning an env"


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """Builds instances of the env `env_id` names, adapted to `BaseEnv` (see the module doc).

    Picklable (strings, the config's kwargs and a number), so that subprocess workers build their own instances.

    Attributes:
        env_id: as configured: `package.module:Name`, `gymnasium:ID` or a plain gymnasium id.
        backend: "custom" or "gymnasium".
        kwargs: keyword arguments of the class, the function or `gymnasium.make`.
        max_episode_steps: gymnasium ids: their TimeLimit (0: the registered one).
    """

    env_id: str
    backend: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_episode_steps: int = 0

    def check(self) -> None:
        """Imports a custom entry and checks its kind and kwargs. Raises `UserError`."""
        if self.backend == "custom":
            load_entry(self.env_id, self.kwargs)

    def build(self, count: int) -> list[BaseEnv]:
        """`count` new instances; those built before a failure are closed again.

        Raises:
            UserError: a bad entry or kwargs, a factory that returns no env, an unsupported observation space.
        """
        make = self._maker()
        envs: list[BaseEnv] = []
        try:
            for _ in range(count):
                envs.append(adapt_observations(make(), self.env_id))
        except BaseException:
            for env in envs:
                env.close()
            raise
        return envs

    def _maker(self) -> Callable[[], BaseEnv]:
        if self.backend == "gymnasium":
            gym_id = self.env_id.removeprefix(GYMNASIUM_PREFIX)
            return lambda: GymnasiumEnv.make(gym_id, self.max_episode_steps, **self.kwargs)
        obj, kind = load_entry(self.env_id, self.kwargs)
        if kind == "base":
            return lambda: obj(**self.kwargs)
        return lambda: as_base_env(obj(**self.kwargs), self.env_id, kind)


def load_entry(path: str, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """Imports `package.module:Name`; returns it and its kind: "base", "gymnasium" (classes) or "factory".

    Raises:
        UserError: module not found or failing to import, name missing, not one of the kinds, an abstract BaseEnv,
            or kwargs that do not fit its signature.
    """
    obj = import_object(path, "custom env")
    attr = path.partition(":")[2]
    if isinstance(obj, type):
        gym_env = None if issubclass(obj, BaseEnv) else _gymnasium_env_class()
        if issubclass(obj, BaseEnv):
            if inspect.isabstract(obj):
                raise UserError(f"custom env '{path}': '{attr}' does not implement reset() and step()")
            kind = "base"
        elif gym_env is not None and issubclass(obj, gym_env):
            kind = "gymnasium"
        else:
            raise UserError(f"custom env '{path}': '{attr}' is not {_KINDS}")
    elif callable(obj):
        kind = "factory"
    else:
        raise UserError(f"custom env '{path}': '{attr}' is not {_KINDS}")
    try:
        inspect.signature(obj).bind(**kwargs)
    except TypeError as e:
        raise UserError(f"custom env '{path}': kwargs {sorted(kwargs)} do not fit '{attr}': {e}") from None
    except ValueError:  # no signature to check (a builtin): the call itself will tell
        pass
    return obj, kind


def as_base_env(env: Any, path: str, kind: str) -> BaseEnv:
    """What a gymnasium class or a factory built, as a `BaseEnv`.

    Raises:
        UserError: a factory returned neither a `BaseEnv` nor a `gymnasium.Env`.
    """
    if isinstance(env, BaseEnv):
        return env
    gym_env = _gymnasium_env_class()
    if gym_env is not None and isinstance(env, gym_env):
        return GymnasiumEnv(env, path)
    attr = path.partition(":")[2]
    raise UserError(f"custom env '{path}': '{attr}' returned {type(env).__name__}; expected a gymnasium.Env or a "
                    "jaxrl_dist.envs.BaseEnv")


def _gymnasium_env_class() -> type | None:
    try:
        import gymnasium
    except ImportError:  # Without gymnasium, only BaseEnv entries exist.
        return None
    return gymnasium.Env
