"""The replay a config asks for: uniform or prioritized, with frame stacks as they come or stored once; and the
n-step writer that feeds one partition of it."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from jaxrl_dist.algos import make_algorithm, resolve_algorithm
from jaxrl_dist.algos.base import PrioritizedBatch, Transition
from jaxrl_dist.config import Config, Sizes
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.replay.buffer import Partition, ReplayBuffer
from jaxrl_dist.replay.feedback import PRIORITY
from jaxrl_dist.replay.frames import FramePartition, FrameWriter, frame_capacity
from jaxrl_dist.replay.nstep import NStepWriter
from jaxrl_dist.replay.prioritized import PrioritizedReplay, linear_beta


def transition_example(spec: EnvSpec) -> Transition:
    """One transition of zeros: the shapes and dtypes the replay stores."""
    obs = np.zeros(spec.obs_shape, spec.obs_dtype)
    return Transition(obs, np.zeros(spec.action_shape, action_dtype(spec)), np.float32(0), np.float32(0), obs)


def action_dtype(spec: EnvSpec) -> type:
    return np.int32 if spec.action_kind == "discrete" else np.float32


def sample_example(spec: EnvSpec, prioritized: bool) -> Transition | PrioritizedBatch:
    """One sampled item of zeros as the learner gets it (with `weight` and `index` when prioritized)."""
    t = transition_example(spec)
    return PrioritizedBatch(*t, np.float32(1), np.zeros(2, np.int32)) if prioritized else t


def zero_samples(spec: EnvSpec, prioritized: bool, lead: tuple[int, ...]) -> Any:
    """Zeros shaped like sampled batches with leading axes `lead` (e.g. `(K, B)`)."""
    example = sample_example(spec, prioritized)
    return type(example)(*(np.zeros((*lead, *np.shape(x)), np.asarray(x).dtype) for x in example))


def check_fit(cfg: Config, spec: EnvSpec) -> None:
    """Raises `ConfigError` where `replay.frame_dedup` or `replay.prioritized` cannot work with the env or the
    algorithm (the prioritized check traces the algorithm's update abstractly; nothing runs)."""
    r = cfg.replay
    if not (r.frame_dedup or r.prioritized):
        return
    key = "replay.frame_dedup" if r.frame_dedup else "replay.prioritized"
    if resolve_algorithm(cfg.algo.name).data != "replay":
        raise ConfigError(f"config key '{key}': algorithm {cfg.algo.name} has no replay; allowed: false")
    if r.frame_dedup and (len(spec.obs_shape) != 3 or spec.obs_shape[0] < 2 or np.dtype(spec.obs_dtype) != np.uint8):
        raise ConfigError(
            f"config key 'replay.frame_dedup': env {cfg.env.id} has {spec.obs_dtype} observations of shape "
            f"{spec.obs_shape}; frame storage needs uint8 frame stacks [C >= 2, H, W] (allowed here: false)"
        )
    if not r.prioritized:
        return
    algo = make_algorithm(spec, cfg)  # on one device: the check needs no mesh
    batch = zero_samples(spec, True, (r.batch_size,))
    try:
        _, metrics = jax.eval_shape(algo.update, jax.eval_shape(algo.init, jax.random.PRNGKey(0)), batch)
        shape = getattr(metrics.get(PRIORITY), "shape", None)
    except Exception as e:  # noqa: BLE001  # a user's update that cannot take a PrioritizedBatch
        shape = f"an error: {type(e).__name__}: {e}".splitlines()[0]
    if shape != (r.batch_size,):
        raise ConfigError(
            f"config key 'replay.prioritized': algorithm {cfg.algo.name} returns no [batch] '{PRIORITY}' metric for "
            f"a PrioritizedBatch (got {shape}); allowed: false, or an algorithm that supports it (dqn)"
        )


def make_replay(cfg: Config, sizes: Sizes, spec: EnvSpec, partitions: int) -> ReplayBuffer:
    """The replay of a run with `partitions` writers (one per actor)."""
    example, capacity, margin = transition_example(spec), sizes.capacity_per_actor, sizes.write_margin
    make_partition = None
    if cfg.replay.frame_dedup:
        stack = spec.obs_shape[0]
        frames = frame_capacity(capacity, stack, cfg.env.num_envs, cfg.algo.n_step, sizes.env_batch)
        make_partition = functools.partial(FramePartition, example, capacity, margin, frames,
                                           sizes.env_batch * (stack + 1))
    if not cfg.replay.prioritized:
        return ReplayBuffer(example, partitions, capacity, margin, make_partition)
    r = cfg.replay
    return PrioritizedReplay(example, partitions, capacity, margin, alpha=r.alpha,
                             beta=linear_beta(r.beta_start, r.beta_end, sizes.beta_steps), eps=r.priority_eps,
                             block=cfg.roles.mode == "serial", make_partition=make_partition)


def make_writer(cfg: Config, spec: EnvSpec, num_envs: int, partition: Partition) -> NStepWriter | FrameWriter:
    """The n-step writer of one actor's partition (a `FrameWriter` for a `FramePartition`)."""
    n, gamma = cfg.algo.n_step, cfg.algo.gamma
    if isinstance(partition, FramePartition):
        return FrameWriter(num_envs, n, gamma, partition, spec.action_shape, action_dtype(spec))
    return NStepWriter(num_envs, n, gamma, spec.obs_shape, spec.obs_dtype, spec.action_shape, action_dtype(spec))
