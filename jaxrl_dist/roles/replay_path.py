"""The replay data path (`AlgorithmDef.data == "replay"`): off-policy learning from a host replay.

```
 actor i: recv -> act -> send -> ReplayWriter: n-step transitions -> partition i (one writer, lock-free)
 sampler (thread): draws [K, B] from every partition -> device_put to the learner devices -> BatchQueue
 learner: K fused updates per batch -> ParamStore; priorities back to the replay (prioritized)
 RatioLimiter: the learner waits for env steps, actors wait for updates (replay_ratio, ratio_slack)
```
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.config import Config, Plan
from jaxrl_dist.envs import EnvSpec, StepBatch, VecEnv
from jaxrl_dist.records import PriorityFeedback
from jaxrl_dist.replay import FramePartition, FrameWriter, NStepWriter, Partition, PrioritizedReplay, ReplayBuffer
from jaxrl_dist.replay.frames import frame_capacity
from jaxrl_dist.replay.items import action_dtype, transition_example, zero_samples
from jaxrl_dist.replay.prioritized import linear_beta
from jaxrl_dist.roles.datapath import PathInputs
from jaxrl_dist.roles.lifetime import Timers
from jaxrl_dist.roles.sampler import BatchQueue, Sampler
from jaxrl_dist.roles.sync import Counters, ParamStore, RatioLimiter


def make_replay(cfg: Config, plan: Plan, spec: EnvSpec, partitions: int) -> ReplayBuffer:
    """The replay of a run with `partitions` writers (one per actor): uniform or prioritized, with frame stacks as
    they come or each frame stored once."""
    example, capacity, margin = transition_example(spec), plan.capacity_per_actor, plan.write_margin
    make_partition = None
    if cfg.replay.frame_dedup:
        stack = spec.obs_shape[0]
        frames = frame_capacity(capacity, stack, cfg.env.num_envs, plan.n_step, plan.env_batch)
        make_partition = functools.partial(FramePartition, example, capacity, margin, frames,
                                           plan.env_batch * (stack + 1))
    if not cfg.replay.prioritized:
        return ReplayBuffer(example, partitions, capacity, margin, make_partition)
    r = cfg.replay
    return PrioritizedReplay(example, partitions, capacity, margin, alpha=r.alpha,
                             beta=linear_beta(r.beta_start, r.beta_end, plan.beta_steps), eps=r.priority_eps,
                             block=cfg.roles.mode == "serial", make_partition=make_partition)


def make_nstep_writer(plan: Plan, spec: EnvSpec, num_envs: int, partition: Partition) -> NStepWriter | FrameWriter:
    """The n-step writer of one actor's partition (a `FrameWriter` for a `FramePartition`)."""
    if isinstance(partition, FramePartition):
        return FrameWriter(num_envs, plan.n_step, plan.gamma, partition, spec.action_shape, action_dtype(spec))
    return NStepWriter(num_envs, plan.n_step, plan.gamma, spec.obs_shape, spec.obs_dtype, spec.action_shape,
                       action_dtype(spec))


class ReplayWriter:
    """One actor's side of the replay path: n-step transitions into the partition it alone writes, and the
    staleness rule for its parameters.

    Args:
        nstep: the actor's n-step writer.
        partition: its replay partition.
        spec: the env spec.
        num_envs: the actor's envs.
        store: the learner's parameter store.
        limiter: the ratio limiter (its `updates` is how far the learner is).
        max_staleness: most learner updates the actor's parameters may lag before it waits.
    """

    def __init__(self, nstep: NStepWriter | FrameWriter, partition: Partition, spec: EnvSpec, num_envs: int,
                 store: ParamStore, limiter: RatioLimiter, max_staleness: int) -> None:
        self.nstep, self.partition, self.store, self.limiter = nstep, partition, store, limiter
        self.max_staleness = max_staleness
        self.last_obs = np.zeros((num_envs, *spec.obs_shape), spec.obs_dtype)
        self.last_action: np.ndarray = np.zeros((num_envs, *spec.action_shape), action_dtype(spec))

    def refresh(self, take: Callable[[], int], timeout: float) -> bool:
        """Takes the newest parameters (`take()` returns the version in use); waits while they lag the learner by
        more than `max_staleness` updates. False when the wait timed out."""
        version = take()
        if self.limiter.updates - version <= self.max_staleness:
            return True
        if not self.store.wait_newer(self.limiter.updates - self.max_staleness, timeout):
            return False
        take()
        return True

    @staticmethod
    def action(out: Any) -> np.ndarray:
        """The env actions of what `act` returned (host arrays): the actions themselves."""
        return np.asarray(out)

    def write(self, batch: StepBatch, actions: np.ndarray, timers: Timers) -> None:
        """The transitions into this batch's observations (from each env's previous observation and action), then
        remembers the batch's observations and the actions just sent."""
        ids, moved = batch.env_ids, ~batch.first
        t = None
        if moved.all():
            t = self.nstep.step(ids, self.last_obs[ids], self.last_action[ids], batch.reward, batch.obs,
                                batch.terminated, batch.truncated)
        elif moved.any():
            sel = ids[moved]
            t = self.nstep.step(sel, self.last_obs[sel], self.last_action[sel], batch.reward[moved],
                                batch.obs[moved], batch.terminated[moved], batch.truncated[moved])
        if t is not None:
            self.partition.add(t)  # type: ignore[arg-type]  # a FrameWriter's FrameBatch goes to its FramePartition
        self.last_obs[ids] = batch.obs
        self.last_action[ids] = actions


class ReplayPath:
    """The replay data path of one process (see the module docstring).

    Attributes:
        replay: the host replay, one partition per actor.
        limiter: the ratio limiter.
        queue: prepared batches on the learner devices, filled by the sampler thread.
        feedback: where the learner hands each call's priorities (prioritized replay), else None.
    """

    def __init__(self, inputs: PathInputs) -> None:
        cfg, plan, counters = inputs.cfg, inputs.plan, inputs.counters
        self.cfg, self.plan, self.spec, self.placement = cfg, plan, inputs.spec, inputs.placement
        self.replay = make_replay(cfg, plan, inputs.spec, plan.actors)
        start = counters.env_steps + (0 if counters.replay_restored else plan.fill)
        self.limiter = RatioLimiter(plan.ratio, start, plan.ratio_slack, counters.env_steps, counters.updates,
                                    actors=plan.actors, peer_steps=counters.peer_steps)
        seed, rank = cfg.train.seed, inputs.rank
        self.queue = BatchQueue(cfg.replay.prefetch)
        placement = inputs.placement
        put = placement.put_batches if placement.multiprocess else placement.batches
        count = 1 if cfg.roles.mode == "serial" else cfg.replay.samplers
        # Sampler 0's generator is the one checkpoints keep (`rng_state`); the others are seeded apart from it.
        rngs = [np.random.default_rng([seed, 2] if rank is None else [seed, 2, rank])]
        rngs += [np.random.default_rng([seed, 2, rank or 0, i]) for i in range(1, count)]
        shape = (plan.updates_per_call, plan.batch)
        staging = placement.devices[0].platform != "cpu"  # see `Sampler`: on CPU, fresh arrays used in place
        self.samplers = [Sampler(self._sample, self.ready, put, self.queue, inputs.lifetime, inputs.timers, rng,
                                 zero_samples(inputs.spec, cfg.replay.prioritized, shape) if staging else None)
                         for rng in rngs]
        self.rng = rngs[0]
        self.feedback: Callable[[PriorityFeedback], None] | None = None
        if isinstance(self.replay, PrioritizedReplay):
            self.feedback = self.replay.feedback

    def _sample(self, rng: np.random.Generator, out: Any) -> Any:
        """One learner call's batches gathered into `out`: a `Transition`, or a `PrioritizedBatch` whose beta follows
        the env steps."""
        return self.replay.sample_stacked(self.plan.updates_per_call, self.plan.batch, rng, self.limiter.env_steps,
                                          out=out)

    def writer(self, index: int, env: VecEnv, store: ParamStore) -> ReplayWriter:
        partition = self.replay.partitions[index]
        nstep = make_nstep_writer(self.plan, self.spec, env.num_envs, partition)
        return ReplayWriter(nstep, partition, self.spec, env.num_envs, store, self.limiter,
                            self.cfg.train.max_staleness)

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return [(f"sampler{i}" if i else "sampler", s.run) for i, s in enumerate(self.samplers)]

    def next_batch(self) -> Any:
        """Serial mode: the learner's next batch, drawn inline."""
        return self.samplers[0].produce()

    def ready(self) -> bool:
        """Whether the replay holds a batch."""
        return self.replay.size() >= self.plan.batch

    def warmup_batches(self) -> Any:
        """Zeros shaped like one learner call's batches on the learner devices (to compile before data arrives)."""
        zeros = zero_samples(self.spec, self.cfg.replay.prioritized, (self.plan.updates_per_call, self.plan.batch))
        if self.placement.multiprocess:  # this process's share of the global batch
            return self.placement.put_batches(zeros)
        return jax.device_put(zeros, self.placement.batches)

    def target_updates(self, counters: Counters) -> int:
        """The updates the learner makes in all, whatever its env steps overshoot its share (every group the same
        count, so every collective is entered as often in every group); the limiter is capped there."""
        k = self.plan.updates_per_call
        target = counters.updates + (self.limiter.updates_at(self.plan.env_step_budget) - counters.updates) // k * k
        self.limiter.max_updates = target
        return target

    def size(self) -> int:
        return self.replay.size()

    def state_dict(self) -> dict[str, Any]:
        return self.replay.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.replay.load_state_dict(state)

    def rng_state(self) -> dict[str, Any] | None:
        """The sampler's generator state (saved in checkpoints, so a resume draws what the run would have)."""
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
