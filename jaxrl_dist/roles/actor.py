"""The actor role: steps its vectorized env with the newest parameters it has and writes its replay partition."""

from __future__ import annotations

import collections

import jax
import numpy as np

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.envs import EpisodeStats, VecEnv
from jaxrl_dist.replay import NStepWriter, Partition
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.segments import SegmentFeed
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter


class Actor:
    """One actor: an env, its n-step writer and replay partition, and a jitted exploring policy.

    `step()` does one recv -> write -> act -> send round; the async runner calls it in a loop on a thread, the serial
    runner calls it inline. With `deterministic`, each batch is ordered by env id so that a serial run does not
    depend on EnvPool's thread timing.

    Args:
        index: actor number (its key in the limiter's counters).
        env: the actor's vectorized env.
        algo: the algorithm's pure functions.
        writer: turns steps into n-step transitions.
        partition: the replay partition this actor alone writes.
        params: the parameter store the learner publishes to.
        limiter: the replay-ratio limiter.
        key: PRNG key of the exploring policy.
        device: where inference runs.
        max_staleness: most learner updates the parameters in use may lag.
        deterministic: order batches by env id (serial mode).
        feed: on-policy algorithms: the segment path (`writer` and `partition` are then None); parameters change
            only between segments, as the feed says.
    """

    def __init__(
        self,
        index: int,
        env: VecEnv,
        algo: Algorithm,
        writer: NStepWriter | None,
        partition: Partition | None,
        params: ParamStore,
        limiter: RatioLimiter,
        key: jax.Array,
        device: jax.Device,
        max_staleness: int,
        deterministic: bool = False,
        feed: SegmentFeed | None = None,
    ) -> None:
        self.index, self.env, self.algo, self.writer, self.partition = index, env, algo, writer, partition
        self.store, self.limiter, self.device = params, limiter, device
        self.max_staleness, self.deterministic, self.feed = max_staleness, deterministic, feed
        self.key = jax.device_put(key, device)
        self.stats = EpisodeStats(env.num_envs)
        spec = env.spec
        self.last_obs = np.zeros((env.num_envs, *spec.obs_shape), spec.obs_dtype)
        action_dtype = np.int32 if spec.action_kind == "discrete" else np.float32
        self.last_action = np.zeros((env.num_envs, *spec.action_shape), action_dtype)
        self._act = jax.jit(algo.act)  # runs where its inputs live: the actor device
        self.params, self.version = None, -1
        self.finished: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()  # for the driver

    def start(self) -> None:
        self.env.reset()

    def refresh_params(self, timeout: float = 0.1) -> bool:
        """Takes the newest parameters; waits while they lag more than `max_staleness`. False on timeout."""
        if self.feed is not None:
            return self.feed.refresh(self._take_latest, timeout)
        self._take_latest()
        lag = self.limiter.updates - self.version
        if lag > self.max_staleness and not self.store.wait_newer(self.limiter.updates - self.max_staleness, timeout):
            return False
        self._take_latest()
        return True

    def _take_latest(self) -> None:
        if self.store.version != self.version:
            params, self.version = self.store.latest()
            self.params = jax.device_put(params, self.device)  # a no-op when actor and learner share a device

    def step(self, timers: Timers) -> int:
        """One round with the env; returns the env steps taken (transitions, reset steps excluded)."""
        with timers.span("actor/recv"):
            batch = self.env.recv()
        if self.deterministic:
            order = np.argsort(batch.env_ids)
            batch = type(batch)(*(x[order] for x in batch))
        ids = batch.env_ids
        with timers.span("actor/write"):
            moved = ~batch.first
            t = None
            if self.writer is None:  # on-policy: the segment row is written with the policy's outputs below
                steps = int(moved.sum())
            elif moved.all():
                steps = len(ids)
                t = self.writer.step(ids, self.last_obs[ids], self.last_action[ids], batch.reward, batch.obs,
                                     batch.terminated, batch.truncated)
            else:
                steps = int(moved.sum())
                sel = ids[moved]
                t = self.writer.step(sel, self.last_obs[sel], self.last_action[sel], batch.reward[moved],
                                     batch.obs[moved], batch.terminated[moved], batch.truncated[moved]) if steps else None
            if t is not None and self.partition is not None:
                self.partition.add(t)
            self.last_obs[ids] = batch.obs
            returns, lengths = self.stats.update(batch)
            if len(returns):
                self.finished.append((returns, lengths))
        self.limiter.add_env_steps(self.index, steps)
        eps = self.algo.exploration(self.limiter.env_steps)
        with timers.span("actor/inference"):
            actions, self.key = self._act(self.params, batch.obs, self.key, eps)
            if self.feed is not None:  # a record of the policy's outputs for the segment, with the action
                record = jax.device_get(actions)
                self.feed.write(batch, record, timers)
                actions = record.action
            actions = np.asarray(actions)
        self.last_action[ids] = actions
        self.env.send(actions, ids)
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
