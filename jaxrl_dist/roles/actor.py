"""The actor role: steps its vectorized env with the parameters its data path allows and hands what it saw to the
path's writer."""

from __future__ import annotations

import collections

import jax
import numpy as np

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.envs import EpisodeStats, VecEnv
from jaxrl_dist.roles.datapath import Writer
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sync import Limiter, ParamStore


class Actor:
    """One actor: an env, its jitted exploring policy, and its data path's writer.

    `step()` does one recv -> act -> send -> write round; the async runner calls it in a loop on a thread, the serial
    runner calls it inline. The writer (replay partition or on-policy segments) is all the actor knows of where its
    experience goes, and it says which parameters the actor may use (`refresh_params`). With `deterministic`, each
    batch is ordered by env id so that a serial run does not depend on EnvPool's thread timing.

    Args:
        index: actor number (its slot in the limiter's counters).
        env: the actor's vectorized env.
        algo: the algorithm's pure functions.
        writer: the data path's writer for this actor (`jaxrl_dist.roles.datapath.Writer`).
        params: the parameter store the learner publishes to.
        limiter: the data path's limiter.
        key: PRNG key of the exploring policy.
        device: where inference runs.
        deterministic: order batches by env id (serial mode).
    """

    def __init__(self, index: int, env: VecEnv, algo: Algorithm, writer: Writer, params: ParamStore,
                 limiter: Limiter, key: jax.Array, device: jax.Device, deterministic: bool = False) -> None:
        self.index, self.env, self.algo, self.writer = index, env, algo, writer
        self.store, self.limiter, self.device, self.deterministic = params, limiter, device, deterministic
        self.key = jax.device_put(key, device)
        self.stats = EpisodeStats(env.num_envs)
        self._act = jax.jit(algo.act)  # runs where its inputs live: the actor device
        self.params, self.version = None, -1
        self.finished: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()  # for the driver

    def start(self) -> None:
        self.env.reset()
        self.stats.reset()  # a game in progress does not carry over (a new life continues its game's sums)

    def refresh_params(self, timeout: float = 0.1) -> bool:
        """Takes the parameters the writer allows (the newest, or as its data path's staleness rule says); False
        when a wait timed out."""
        return self.writer.refresh(self._take_latest, timeout)

    def _take_latest(self) -> int:
        """Takes the store's newest parameters; returns the version in use."""
        if self.store.version != self.version:
            self.params, self.version = self.store.latest(self.device)  # computed, on this actor's device
        return self.version

    def step(self, timers: Timers) -> int:
        """One round with the env; returns the env steps taken (reset steps excluded)."""
        with timers.span("actor/recv"):
            batch = self.env.recv()
        if self.deterministic:
            order = np.argsort(batch.env_ids)
            batch = type(batch)(*(x[order] for x in batch))
        steps = len(batch.first) - int(np.count_nonzero(batch.first))
        eps = self.algo.exploration(self.limiter.env_steps + steps)
        with timers.span("actor/inference"):
            out, self.key = self._act(self.params, batch.obs, self.key, eps)
            out = jax.device_get(out)
            actions = self.writer.action(out)
        self.env.send(actions, batch.env_ids)
        with timers.span("actor/write"):
            self.writer.write(batch, out, timers)
            returns, lengths = self.stats.update(batch)
            if len(returns):
                self.finished.append((returns, lengths))
        self.limiter.add_env_steps(self.index, steps)
        return steps

    def run(self, lifetime: Lifetime, timers: Timers, total_env_steps: int) -> None:
        """The actor thread's loop: runs until the env-step budget is reached or the run stops."""
        stop = lifetime.stop_event
        self.start()
        while not stop.is_set() and self.limiter.env_steps < total_env_steps:
            with timers.span("actor/param_wait"):
                if not self.limiter.actor_may_run():
                    self.limiter.wait(lambda: self.limiter.actor_may_run() or stop.is_set(), timeout=0.1)
                    continue
                if not self.refresh_params():
                    continue
            self.step(timers)
            self.limiter.notify()

    def drain_episodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of the episodes finished since the last call."""
        done = []
        while self.finished:  # deque.popleft is thread-safe against the actor's appends
            done.append(self.finished.popleft())
        if not done:
            return np.zeros(0, np.float32), np.zeros(0, np.int32)
        return np.concatenate([r for r, _ in done]), np.concatenate([n for _, n in done])
