"""Steps `BaseEnv` instances with exactly EnvPool's semantics: `EnvStepper`, and `SerialVecEnv` in the caller's thread.

`EnvStepper` is the one implementation of these semantics for Python envs; `SerialVecEnv` (the inline backend) runs
it in the caller's thread, the workers of `subproc.SubprocVecEnv` each run one over their share of the envs. It is
the serial twin of the EnvPool adapter. Semantics copied from EnvPool, so that actors and tests cannot tell the
backends apart:
  * `send` queues (env id, action); `recv` takes the batch_size envs that were sent least recently (FIFO), steps
    them and returns their results in that order. With batch_size < num_envs this is EnvPool's async round robin.
  * Next-step autoreset: after a step that ends an episode, that env's next step ignores its action, resets it and
    returns the first observation with reward 0, terminated = truncated = False, first = True. (gymnasium 1.x's
    vector envs call this autoreset mode NEXT_STEP.)
  * Time limit: after `max_episode_steps` steps an episode that did not terminate is truncated; a termination on
    the limit's own step, or one the env reports together with `truncated`, is terminated only.
  * Games: a `BaseEnv` has no lives, so every episode is a whole game (`game_over` = terminated | truncated) and its
    score is its reward (`score` is the `reward` array).
  * Seeding: instance i is reset with seed + i the first time and with None afterwards, so each env keeps one RNG.
  * Checks: until an instance's first reset and first step have passed, their results are checked (the observation's
    shape, step's 4-tuple, a scalar reward) and a mismatch is a one-line `UserError`; after that the instance is
    called directly, at no cost per step.

Stepping is deterministic: the same seeds and actions give the same batches, whatever the threads.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Sequence, Sized
from typing import Any, NoReturn

import numpy as np

from jaxrl_dist.envs.base import BaseEnv, describe
from jaxrl_dist.envs.spec import EnvSpec, StepBatch, spec_from_spaces
from jaxrl_dist.errors import UserError


class EnvStepper:
    """Resets and steps `BaseEnv` instances with the semantics of the module doc, writing rows of result arrays.

    Args:
        envs: the instances, all with the spaces of `envs[0]`.
        seeds: each instance's seed for its first reset.
        max_episode_steps: time limit; 0 uses `envs[0].max_episode_steps` (0 there means none).
        name: the env's id, for messages.

    Attributes:
        envs: the instances.
        spec: their `EnvSpec` (with the time limit in force).
    """

    def __init__(self, envs: Sequence[BaseEnv], seeds: Sequence[int], max_episode_steps: int, name: str) -> None:
        self.envs = list(envs)
        first = self.envs[0]
        limit = max_episode_steps or int(getattr(first, "max_episode_steps", 0) or 0)
        self.spec: EnvSpec = spec_from_spaces(first.observation_space, first.action_space, limit, name=name)
        self._limit = self.spec.max_episode_steps
        self._kind = self.spec.action_kind
        self._name = name
        # Per-env state as Python lists: scalar access to lists is several times cheaper than to numpy arrays.
        self._seeds: list[int | None] = list(seeds)
        self._ended = [True] * len(self.envs)  # the next step of this env is a reset
        self._elapsed = [0] * len(self.envs)
        self._sent = [False] * len(self.envs)  # a step (or reset) of this env is queued: see `claim`
        # What reset / step call: a checker until the instance passed its first reset and step (module doc).
        self._calls: list[Any] = [_FirstCallsChecked(self, i) for i in range(len(self.envs))]

    def restart(self, indices: Iterable[int]) -> None:
        """Makes the next step of these envs a reset, and counts it as queued (`claim`)."""
        for i in indices:
            self._ended[i] = True
            self._sent[i] = True

    def claim(self, ids: list[int]) -> None:
        """Marks a step of each of these envs as queued, until `run` steps it: one that is queued already is a bug
        in the caller's loop.

        Raises:
            ValueError: an env already queued, or twice in `ids` (nothing is claimed then).
        """
        sent = self._sent
        for k, i in enumerate(ids):  # one pass, lists: the cheapest check on the hot path
            if sent[i]:
                for j in ids[:k]:
                    sent[j] = False
                if i in ids[:k]:
                    raise ValueError(f"send: env ids {ids} name an env twice")
                raise ValueError(f"send: env id {i} was sent again before recv returned it")
            sent[i] = True

    def actions(self, actions: np.ndarray) -> Any:
        """A private copy of a batch of actions, one item per env as `BaseEnv.step` takes it: an int (discrete), a
        float32 [*action_shape] row (continuous), an int64 [D] row of the values sent (multi_discrete)."""
        if self._kind == "discrete":
            return np.asarray(actions).tolist()
        return np.array(actions, np.float32 if self._kind == "continuous" else np.int64)

    def run(self, items: Iterable[tuple[int, Any]], rows: Iterable[int], ids: np.ndarray, obs: np.ndarray,
            reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, first: np.ndarray) -> None:
        """Steps (or resets) env i with `action` for each `(i, action)` of `items`, writing i and the results to the
        next row of `rows` in every array. The rows of `reward`, `terminated`, `truncated` and `first` must be zero:
        a reset writes only `obs` and `first`, a step all but `first` (fewer writes per row, this is the hot loop)."""
        sent = self._sent
        for k, (i, action) in zip(rows, items):
            ids[k] = i
            sent[i] = False
            if self._ended[i]:
                obs[k] = self._reset_one(i)
                first[k] = True
            else:
                obs[k], reward[k], terminated[k], truncated[k] = self._step_one(i, action)

    def _reset_one(self, i: int) -> Any:
        seed, self._seeds[i] = self._seeds[i], None
        self._ended[i] = False
        self._elapsed[i] = 0
        return self._calls[i].reset(seed=seed)

    def _step_one(self, i: int, action: Any) -> tuple[Any, float, bool, bool]:
        obs, reward, terminated, truncated = self._calls[i].step(action)
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


def await_sends(cond: threading.Condition, queue: Sized, b: int, timeout: float) -> None:
    """Waits, holding `cond`, until `queue` holds `b` sends.

    Raises:
        TimeoutError: after `timeout` seconds: a single-threaded actor loop that did not send every id it received.
    """
    if not cond.wait_for(lambda: len(queue) >= b, timeout):
        raise TimeoutError(f"recv: only {len(queue)} of batch_size={b} envs were sent within {timeout}s; send "
                           "actions for the env ids of every batch recv returned")


class _FirstCallsChecked:
    """Calls instance i of a stepper and checks its results, until its first reset and step have passed; then
    puts the instance itself in the stepper's place, so that later calls cost nothing extra."""

    def __init__(self, stepper: EnvStepper, i: int) -> None:
        self._stepper, self._i = stepper, i
        self._env = stepper.envs[i]
        self._passed: set[str] = set()

    def reset(self, seed: int | None = None) -> Any:
        obs = self._env.reset(seed=seed)
        self._check_obs(obs, "reset()")
        return self._passed_call("reset", obs)

    def step(self, action: Any) -> Any:
        out = self._env.step(action)
        if not isinstance(out, (tuple, list)) or len(out) != 4:
            self._fail(f"step() returned {describe(out)}; expected (obs, reward, terminated, truncated)")
        self._check_obs(out[0], "step()")
        if np.ndim(out[1]) != 0:
            self._fail(f"step() returned a reward of shape {np.shape(out[1])}; expected a number")
        return self._passed_call("step", out)

    def _passed_call(self, what: str, result: Any) -> Any:
        self._passed.add(what)
        if len(self._passed) == 2:
            self._stepper._calls[self._i] = self._env
        return result

    def _check_obs(self, obs: Any, where: str) -> None:
        expected = self._stepper.spec.obs_shape
        if isinstance(obs, (tuple, dict)):
            self._fail(f"{where} returned {describe(obs)} as the observation; expected an array of shape {expected}")
        try:
            shape = np.shape(obs)
        except ValueError:  # a ragged sequence
            self._fail(f"{where} returned a ragged observation; expected an array of shape {expected}")
        if shape != expected:
            self._fail(f"{where} returned an observation of shape {shape}; expected {expected}")

    def _fail(self, what: str) -> NoReturn:
        raise UserError(f"env '{self._stepper._name}': {what}")


class SerialVecEnv:
    """A `VecEnv` over a list of `BaseEnv` instances of one kind, stepped in the caller's thread by `recv`.

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
        self._rows = range(batch_size)
        self._stepper = EnvStepper(self.envs, [seed + i for i in range(self.num_envs)], max_episode_steps, name)
        self.spec: EnvSpec = self._stepper.spec
        self._obs_dtype = np.dtype(self.spec.obs_dtype)
        self._queue: collections.deque[tuple[int, Any]] = collections.deque()
        self._cond = threading.Condition()

    def reset(self) -> None:
        """Queues a reset of every env (ids in order); the next recv batches carry first=True."""
        with self._cond:
            self._queue.clear()
            self._stepper.restart(range(self.num_envs))
            self._queue.extend((i, None) for i in range(self.num_envs))
            self._cond.notify_all()

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Queues one action per env id: actions [B] int (discrete), [B, *action_shape] float32 (continuous) or
        [B, D] int (multi_discrete: each env gets its row's values, as int64).

        Raises:
            ValueError: if lengths differ or an env id is already waiting for its step.
        """
        ids = np.asarray(env_ids).tolist()
        if len(actions) != len(ids):
            raise ValueError(f"send: {len(actions)} actions for {len(ids)} env ids")
        # Copied, so that the caller may reuse its buffer before the step actually happens in recv.
        acts = self._stepper.actions(actions)
        with self._cond:
            self._stepper.claim(ids)
            self._queue.extend(zip(ids, acts))
            self._cond.notify_all()

    def recv(self, timeout: float = 60.0) -> StepBatch:
        """Steps the batch_size least recently sent envs and returns their results.

        Raises:
            TimeoutError: if fewer than batch_size envs were sent within `timeout` seconds.
            UserError: an env's first reset or step returned results that do not fit its spaces.
        """
        b = self.batch_size
        with self._cond:
            if len(self._queue) < b:  # a single-threaded loop has always sent enough: no wait_for call then
                await_sends(self._cond, self._queue, b, timeout)
            items = [self._queue.popleft() for _ in range(b)]
        ids = np.empty(b, np.int32)
        obs = np.empty((b, *self.spec.obs_shape), self._obs_dtype)
        reward = np.zeros(b, np.float32)
        terminated = np.zeros(b, bool)
        truncated = np.zeros(b, bool)
        first = np.zeros(b, bool)
        self._stepper.run(items, self._rows, ids, obs, reward, terminated, truncated, first)
        return StepBatch(ids, obs, reward, terminated, truncated, first, reward, terminated | truncated)

    def close(self) -> None:
        """Closes every instance."""
        self._stepper.close()
