"""`VecEnv`, the one interface actors see, and `make_env`, which picks and builds a backend.

Backends:
  * "envpool": a task of `envpool.list_all_envs()`, stepped by EnvPool's C++ threads (`envpool_vec.EnvPoolVecEnv`).
  * "custom": `package.module:Name` naming a `BaseEnv` subclass, a `gymnasium.Env` subclass or a function that
    returns an env (`loading`).
  * "gymnasium": a gymnasium id (optionally written `gymnasium:ID`), adapted by `base.GymnasiumEnv`.
The last two are Python envs, stepped in the caller's thread (vector "inline", `serial.SerialVecEnv`) or in worker
processes (vector "subprocess", `subproc.SubprocVecEnv`). All give the same `StepBatch` semantics (see `serial` for
the list), so an actor written against one runs on all of them.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Protocol

import numpy as np

from jaxrl_dist.envs.loading import GYMNASIUM_PREFIX, EnvFactory
from jaxrl_dist.envs.spec import EnvSpec, StepBatch
from jaxrl_dist.errors import UserError

BACKENDS = ("auto", "envpool", "custom", "gymnasium")
VECTORS = ("inline", "subprocess")


class VecEnv(Protocol):
    """A batch of envs stepped asynchronously: recv a batch, compute its actions, send them back.

    Typical actor loop:
        env.reset()
        while running:
            batch = env.recv()
            env.send(policy(batch.obs), batch.env_ids)

    Attributes:
        spec: static description of one env.
        num_envs: number of envs.
        batch_size: number of envs in every recv.
    """

    spec: EnvSpec
    num_envs: int
    batch_size: int

    def reset(self) -> None:
        """Starts every env; the first recv() batches carry first=True for every env id once."""

    def recv(self, timeout: float = 60.0) -> StepBatch:
        """Returns the next batch_size results. Raises TimeoutError after `timeout` s (custom and gymnasium
        backends, inline or in subprocesses); the envpool backend blocks in C++ and does not enforce it."""
        ...

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Steps `env_ids` (int32 [B], as returned by recv) with actions [B] int, [B, *action_shape] float32 or
        [B, D] int (multi_discrete)."""

    def close(self) -> None:
        """Releases threads and envs."""


def make_env(
    env_id: str,
    *,
    num_envs: int,
    batch_size: int | None = None,
    num_threads: int = 0,
    seed: int = 0,
    max_episode_steps: int = 0,
    backend: str = "auto",
    kwargs: dict[str, Any] | None = None,
    wrappers: list[Any] | None = None,
    vector: str = "inline",
    workers: int = 0,
) -> VecEnv:
    """Builds a `VecEnv` for `env_id`, wrapped in `wrappers` (see `jaxrl_dist.envs.wrappers`).

    Args:
        env_id: an EnvPool task ("CartPole-v1"), `package.module:Name` of a `BaseEnv` subclass, a `gymnasium.Env`
            subclass or a function returning an env, or a gymnasium id ("gymnasium:CartPole-v1", or a plain id
            EnvPool does not know).
        num_envs: number of envs (>= 1).
        batch_size: envs per recv, 1..num_envs; None means num_envs (synchronous).
        num_threads: EnvPool worker threads; 0 means min(os.cpu_count(), num_envs). Ignored by other backends.
        seed: env i is seeded with seed + i.
        max_episode_steps: time limit (truncation); 0 keeps the env's own (EnvPool default, the class attribute,
            gymnasium's registration).
        backend: "auto", "envpool", "custom" or "gymnasium"; "auto" decides from the form of `env_id`.
        kwargs: keyword arguments for `envpool.make`, the custom class or function, or `gymnasium.make`.
        wrappers: the config's `env.wrappers` list, applied first item innermost.
        vector: Python envs: "inline" steps them in the caller's thread, "subprocess" in `workers` processes.
        workers: processes for "subprocess"; 0 means min(os.cpu_count(), num_envs); at most num_envs are started.

    Raises:
        UserError: for an unknown id (with close EnvPool ids), a bad `module:Name` or kwargs, an env whose spaces or
            results do not fit, out-of-range sizes, a bad vector, or a bad wrapper.
    """
    if vector not in VECTORS:
        raise UserError(f"env vector '{vector}' is not allowed; allowed: {', '.join(VECTORS)}")
    if workers < 0:
        raise UserError(f"workers={workers} is not allowed; must be >= 0 (0 = automatic)")
    env = _make_backend_env(env_id, num_envs, batch_size, num_threads, seed, max_episode_steps, backend, kwargs,
                            vector, workers)
    if not wrappers:
        return env
    from jaxrl_dist.envs.wrappers import apply_wrappers

    try:
        return apply_wrappers(env, wrappers)
    except BaseException:
        env.close()
        raise


def _make_backend_env(
    env_id: str, num_envs: int, batch_size: int | None, num_threads: int, seed: int, max_episode_steps: int,
    backend: str, kwargs: dict[str, Any] | None, vector: str, workers: int,
) -> VecEnv:
    batch_size = num_envs if batch_size is None else batch_size
    _check_sizes(num_envs, batch_size, num_threads, max_episode_steps)
    backend = resolve_backend(env_id, backend)
    kwargs = dict(kwargs or {})
    if backend == "envpool":
        if vector != "inline":
            raise UserError(f"env vector '{vector}' is not allowed for envpool task '{env_id}'; allowed: inline "
                            "(EnvPool steps its envs in C++ threads; subprocess is for custom and gymnasium envs)")
        from jaxrl_dist.envs.envpool_vec import EnvPoolVecEnv  # Deferred: importing envpool takes about a second.

        return EnvPoolVecEnv(
            env_id, num_envs=num_envs, batch_size=batch_size, num_threads=num_threads, seed=seed,
            max_episode_steps=max_episode_steps, kwargs=kwargs,
        )  # fmt: skip
    factory = EnvFactory(env_id, backend, kwargs, max_episode_steps)
    factory.check()
    if vector == "subprocess":
        from jaxrl_dist.envs.subproc import SubprocVecEnv

        return SubprocVecEnv(factory, num_envs=num_envs, batch_size=batch_size, seed=seed,
                             max_episode_steps=max_episode_steps, workers=workers)
    from jaxrl_dist.envs.serial import SerialVecEnv

    envs = factory.build(num_envs)
    try:
        return SerialVecEnv(envs, batch_size=batch_size, seed=seed, max_episode_steps=max_episode_steps, name=env_id)
    except BaseException:
        for env in envs:
            env.close()
        raise


def _check_sizes(num_envs: int, batch_size: int, num_threads: int, max_episode_steps: int) -> None:
    if num_envs < 1:
        raise UserError(f"num_envs={num_envs} is not allowed; must be >= 1")
    if not 1 <= batch_size <= num_envs:
        raise UserError(f"batch_size={batch_size} is not allowed; must be in [1, num_envs={num_envs}]")
    if num_threads < 0:
        raise UserError(f"num_threads={num_threads} is not allowed; must be >= 0 (0 = automatic)")
    if max_episode_steps < 0:
        raise UserError(f"max_episode_steps={max_episode_steps} is not allowed; must be >= 0 (0 = env default)")


def resolve_backend(env_id: str, backend: str = "auto") -> str:
    """Returns the concrete backend for `env_id`: "envpool", "custom" or "gymnasium".

    "auto" picks "gymnasium" for `gymnasium:ID`, "custom" for any other `module:Name`, "envpool" for an EnvPool
    task, else "gymnasium" for an id registered there.

    Raises:
        UserError: for an unknown backend, an id the chosen backend does not know, or a malformed custom id.
    """
    if backend not in BACKENDS:
        raise UserError(f"env backend '{backend}' is not allowed; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        if env_id.startswith(GYMNASIUM_PREFIX):
            backend = "gymnasium"
        elif ":" in env_id:
            backend = "custom"
        elif env_id in _envpool_ids():
            backend = "envpool"
        elif env_id in _gymnasium_ids():
            backend = "gymnasium"
        else:
            raise UserError(f"unknown env id '{env_id}'{_suggest(env_id, _envpool_ids())}")
    if backend == "envpool" and env_id not in _envpool_ids():
        raise UserError(f"env id '{env_id}' is not an envpool task{_suggest(env_id, _envpool_ids())}")
    if backend == "gymnasium":
        gym_id = env_id.removeprefix(GYMNASIUM_PREFIX)
        if gym_id not in _gymnasium_ids():
            raise UserError(f"env id '{gym_id}' is not registered in gymnasium{_suggest(gym_id, _gymnasium_ids())}")
    if backend == "custom" and env_id.count(":") != 1:
        raise UserError(f"custom env id '{env_id}' is not allowed; expected 'package.module:Name'")
    return backend


def _suggest(env_id: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(env_id, sorted(known), n=5, cutoff=0.6)
    if close:
        return f"; close matches: {', '.join(close)}"
    return "; see envpool.list_all_envs(), or name your env's class or function as 'package.module:Name'"


@functools.cache
def _envpool_ids() -> frozenset[str]:
    from jaxrl_dist.envs.envpool_vec import import_envpool

    try:
        envpool = import_envpool()
    except ImportError:  # A broken or absent EnvPool only disables that backend.
        return frozenset()
    return frozenset(envpool.list_all_envs())


@functools.cache
def _gymnasium_ids() -> frozenset[str]:
    try:
        import gymnasium
    except ImportError:
        return frozenset()
    return frozenset(gymnasium.registry)
