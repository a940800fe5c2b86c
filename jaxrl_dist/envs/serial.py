"""Vectorizes `BaseEnv` instances with exactly EnvPool's semantics, stepping them in the caller's thread.

This is the serial twin of the EnvPool adapter and the backend for custom and gymnasium envs. Semantics copied from
EnvPool, so that actors and tests cannot tell the backends apart:
  * `send` queues (env id, action); `recv` takes the batch_size envs that were sent least recently (FIFO), steps
    them and returns their results in that order. With batch_size < num_envs this is EnvPool's async round robin.
  * Next-step autoreset: after a step that ends an episode, that env's next step ignores its action, resets it and
    returns the first observation with reward 0, terminated = truncated = False, first = True.
  * Time limit: after `max_episode_steps` steps an episode that did not terminate is truncated; a termination on
    the limit's own step, or one the env reports together with `truncated`, is terminated only.
  * Games: a `BaseEnv` has no lives, so every episode is a whole game (`game_over` = terminated | truncated) and its
    score is its reward (`score` is the `reward` array).
  * Seeding: instance i is reset with seed + i the first time and with None afterwards, so each env keeps one RNG.

Stepping is deterministic: the same seeds and actions give the same batches, whatever the threads.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxrl_dist.envs.base import BaseEnv
from jaxrl_dist.envs.spec import EnvSpec, StepBatch, spec_from_spaces


class SerialVecEnv:
    """A `VecEnv` over a list of `BaseEnv` instances of one kind.

    Thread-safe for one receiving thread and any number of sending threads: `recv` waits (up to `timeout`) until
    batch_size envs have been sent. In a single-threaded actor loop, a recv without enough prior sends is a bug in
    the loop and raises TimeoutError after `timeout`.

    Args:
        envs: the instances; env id i is `envs[i]`. All must share spaces with `envs[0]`.
        batch_size: envs per recv, 1 <= batch_size <= len(envs).
        seed: base seed; instance i gets seed + i on its first reset.
        max_episode_steps: time limit; 0 uses `envs[0].max_episode_steps` (0 there means none).
        name: the env's id, for messages.
    """

    def __init__(
        self, envs: Sequence[BaseEnv], *, batch_size: int, seed: int = 0, max_episode_steps: int = 0, name: str = ""
    ) -> None:
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.batch_size = batch_size
        first = self.envs[0]
        limit = max_episode_steps or int(getattr(first, "max_episode_steps", 0) or 0)
        self.spec: EnvSpec = spec_from_spaces(first.observation_space, first.action_space, limit, name=name)
        self._limit = self.spec.max_episode_steps
        self._obs_dtype = np.dtype(self.spec.obs_dtype)
        self._discrete = self.spec.action_kind == "discrete"
        self._seed = seed
        # Per-env state as Python lists: scalar access to lists is several times cheaper than to numpy arrays.
        self._seeded = [False] * self.num_envs
        self._ended = [True] * self.num_envs  # the next step of this env is a reset
        self._elapsed = [0] * self.num_envs
        self._in_flight = [False] * self.num_envs
        self._queue: collections.deque[tuple[int, Any]] = collections.deque()
        self._cond = threading.Condition()

    def reset(self) -> None:
        """Queues a reset of every env (ids in order); the next recv batches carry first=True."""
        with self._cond:
            self._queue.clear()
            for i in range(self.num_envs):
                self._ended[i] = True
                self._in_flight[i] = True
                self._queue.append((i, None))
            self._cond.notify_all()

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Queues one action per env id: actions [B] int (discrete) or [B, *action_shape] float32.

        Raises:
            ValueError: if lengths differ or an env id is already waiting for its step.
        """
        ids = np.asarray(env_ids).tolist()
        if len(actions) != len(ids):
            raise ValueError(f"send: {len(actions)} actions for {len(ids)} env ids")
        # Copied, so that the caller may reuse its buffer before the step actually happens in recv.
        acts: Any = np.asarray(actions).tolist() if self._discrete else np.array(actions, np.float32)
        with self._cond:
            for k, i in enumerate(ids):
                if self._in_flight[i]:
                    raise ValueError(f"send: env id {i} was sent again before recv returned it")
                self._in_flight[i] = True
                self._queue.append((i, acts[k]))
            self._cond.notify_all()

    def recv(self, timeout: float = 60.0) -> StepBatch:
        """Steps the batch_size least recently sent envs and returns their results.

        Raises:
            TimeoutError: if fewer than batch_size envs were sent within `timeout` seconds.
        """
        b = self.batch_size
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._queue) >= b, timeout):
                raise TimeoutError(
                    f"recv: only {len(self._queue)} of batch_size={b} envs were sent within {timeout}s; "
                    "send actions for the env ids of every batch recv returned"
                )
            items = [self._queue.popleft() for _ in range(b)]
        ids = np.empty(b, np.int32)
        obs = np.empty((b, *self.spec.obs_shape), self._obs_dtype)
        reward = np.zeros(b, np.float32)
        terminated = np.zeros(b, bool)
        truncated = np.zeros(b, bool)
        first = np.zeros(b, bool)
        for k, (i, action) in enumerate(items):
            ids[k] = i
            if self._ended[i]:
                obs[k] = self._reset_one(i)
                first[k] = True
            else:
                obs[k], reward[k], terminated[k], truncated[k] = self._step_one(i, action)
            self._in_flight[i] = False
        return StepBatch(ids, obs, reward, terminated, truncated, first, reward, terminated | truncated)

    def _reset_one(self, i: int) -> np.ndarray:
        seed = None if self._seeded[i] else self._seed + i
        self._seeded[i] = True
        self._ended[i] = False
        self._elapsed[i] = 0
        return self.envs[i].reset(seed=seed)

    def _step_one(self, i: int, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        obs, reward, terminated, truncated = self.envs[i].step(action)
        self._elapsed[i] += 1
        terminated = bool(terminated)
        if self._limit and self._elapsed[i] >= self._limit:
            truncated = True
        truncated = bool(truncated) and not terminated  # terminal wins: nothing to bootstrap from
        self._ended[i] = terminated or truncated
        return obs, float(reward), terminated, truncated

    def close(self) -> None:
        """Closes every instance."""
        for env in self.envs:
            env.close()
