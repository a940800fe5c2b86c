"""The learner's jitted call: K updates fused into one `lax.scan`, sharded over the learner mesh where it has
several devices, optionally carrying every update's per-sample priorities out (prioritized replay).

`fused_update` averages an update's metrics over the K updates of a call, which suits scalars. Prioritized replay
needs each update's `[B]` priorities, so `fused_with_priorities` carries a `[K, B]` array through the scan next to
the learner state and each update writes its row. On a `data` mesh every shard computes the priorities of its slice
of the batch; they are gathered along the batch axis (the slices' order is the sharding's), so the returned array is
the whole `[K, B]` on every device, like the state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxrl_dist.distributed.mesh import DATA_AXIS, LearnerMesh, axis_mean
from jaxrl_dist.algos.base import metrics_of
from jaxrl_dist.records import Prioritized


class CallOutput(NamedTuple):
    """What one learner call returns.

    Attributes:
        state: the learner state after the K updates.
        metrics: scalar metrics, each the mean over the K updates (and the devices).
        priority: `[K, B]` float32 `|TD error|` of every sample of the call (prioritized replay), else None.
    """

    state: Any
    metrics: dict[str, jax.Array]
    priority: Any = None


def fuse(update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]) -> Callable[..., Any]:
    """`(state, batches [K, B, ...]) -> (state, mean metrics)`: K updates in one `lax.scan`, one dispatch."""

    def one(state: Any, batch: Any) -> tuple[Any, dict[str, jax.Array]]:
        state, out = update(state, batch)
        return state, metrics_of(out)

    def many(state: Any, batches: Any) -> tuple[Any, dict[str, jax.Array]]:
        state, metrics = jax.lax.scan(one, state, batches)
        return state, jax.tree.map(jnp.mean, metrics)

    return many


def fused_update(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None) -> Callable[..., Any]:
    """The learner's jitted call: K fused updates, sharded over `placement` when it has several devices (None: one
    device, wherever the state is).

    `update` must come from an algorithm built with `placement.grad_reduce`. On a mesh, its metrics are averaged
    over the devices too.

    `check_vma=False` keeps the per-shard semantics the algorithms are written for: with the check on, JAX would
    already sum the gradients of replicated parameters over the devices inside `jax.grad`, and the injected mean
    would then see (and the optimizer get) the sum, not the mean.
    """
    many = fuse(update)
    if placement is None or placement.size == 1:
        return jax.jit(many)

    def per_shard(state: Any, batches: Any) -> tuple[Any, Any]:
        state, metrics = many(state, batches)
        return state, axis_mean(metrics)

    sharded = jax.jit(jax.shard_map(per_shard, mesh=placement.mesh, in_specs=(P(), P(None, DATA_AXIS)),
                                    out_specs=(P(), P()), check_vma=False))
    if placement.devices[0].platform != "cpu":
        return sharded

    def one_at_a_time(state: Any, batches: Any) -> tuple[Any, Any]:
        # XLA:CPU runs each (fake) device's part on a shared thread pool; with several calls in flight their
        # all-reduces can take every thread and wait for each other until XLA aborts the process (a 60 s rendezvous
        # timeout). One call in flight at a time avoids it; on CPU the overlap it costs is small.
        return jax.block_until_ready(sharded(state, batches))

    return one_at_a_time


def fused_with_priorities(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None
                          ) -> Callable[..., CallOutput]:
    """`(state, batches [K, B, ...]) -> CallOutput` for `PrioritizedBatch`es, with `priority` `[K, B]` float32 and
    the other metrics the means `fused_update` gives.

    Args:
        update: the algorithm's update; for a `PrioritizedBatch` it returns `Prioritized(metrics, priority)` with
            `priority` `[B / devices]`.
        placement: the learner devices (None: one device).
    """
    sharded = placement is not None and placement.size > 1

    def step(carry: tuple[Any, jax.Array, jax.Array], batch: Any) -> tuple[Any, dict[str, jax.Array]]:
        state, priorities, i = carry
        state, out = update(state, batch)
        assert isinstance(out, Prioritized), "checked by the plan (jaxrl_dist.config.plan)"
        row = out.priority.astype(jnp.float32)
        if sharded:
            row = jax.lax.all_gather(row, DATA_AXIS, tiled=True)
        return (state, jax.lax.dynamic_update_index_in_dim(priorities, row, i, 0), i + 1), out.metrics

    fused = fused_update(step, placement)
    zeros: dict[tuple[int, ...], jax.Array] = {}  # the carry's initial [K, B], made once per shape

    def call(state: Any, batches: Any) -> CallOutput:
        shape = tuple(batches.weight.shape)
        if shape not in zeros:
            zeros[shape] = jnp.zeros(shape, jnp.float32)
            if placement is not None:
                zeros[shape] = jax.device_put(zeros[shape], placement.replicated)
        (state, priorities, _), metrics = fused((state, zeros[shape], jnp.int32(0)), batches)
        return CallOutput(state, metrics, priorities)

    return call


def learner_call(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None, prioritized: bool
                 ) -> Callable[[Any, Any], CallOutput]:
    """The learner's call for its data: `fused_with_priorities` for prioritized replay, else `fused_update`."""
    if prioritized:
        return fused_with_priorities(update, placement)
    fused = fused_update(update, placement)

    def call(state: Any, batches: Any) -> CallOutput:
        return CallOutput(*fused(state, batches))

    return call
