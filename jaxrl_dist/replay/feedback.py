"""The learner's call for prioritized replay: K fused updates that also return every sample's new priority.

`fused_update` averages an update's metrics over the K updates of a call, which suits scalars. Prioritized replay
needs the `[B]` metric `priority` of each of the K batches, so here the scan carries a `[K, B]` array next to the
learner state and each update writes its row. On a `data` mesh every shard computes the priorities of its slice of
the batch; they are gathered along the batch axis (the slices' order is the sharding's), so the returned array is
the whole `[K, B]` on every device, like the state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrl_dist.distributed.mesh import DATA_AXIS, LearnerMesh, fused_update

PRIORITY = "priority"  # the metric an algorithm returns for prioritized replay: [B] float32 |TD error|


def fused_with_priorities(update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
                          placement: LearnerMesh | None) -> Callable[..., Any]:
    """`(state, batches [K, B, ...]) -> (state, metrics)` for `PrioritizedBatch`es, where `metrics[PRIORITY]` is
    `[K, B]` float32 and the other metrics are the means `fused_update` gives.

    Args:
        update: the algorithm's update; its metrics must hold `PRIORITY` `[B / devices]`.
        placement: the learner devices (None: one device).
    """
    sharded = placement is not None and placement.size > 1

    def step(carry: tuple[Any, jax.Array, jax.Array], batch: Any) -> tuple[Any, dict[str, jax.Array]]:
        state, priorities, i = carry
        state, metrics = update(state, batch)
        metrics = dict(metrics)
        row = metrics.pop(PRIORITY).astype(jnp.float32)
        if sharded:
            row = jax.lax.all_gather(row, DATA_AXIS, tiled=True)
        return (state, jax.lax.dynamic_update_index_in_dim(priorities, row, i, 0), i + 1), metrics

    fused = fused_update(step, placement)
    zeros: dict[tuple[int, ...], jax.Array] = {}  # the carry's initial [K, B], made once per shape

    def call(state: Any, batches: Any) -> tuple[Any, dict[str, jax.Array]]:
        shape = tuple(batches.weight.shape)
        if shape not in zeros:
            zeros[shape] = jnp.zeros(shape, jnp.float32)
            if placement is not None:
                zeros[shape] = jax.device_put(zeros[shape], placement.replicated)
        (state, priorities, _), metrics = fused((state, zeros[shape], jnp.int32(0)), batches)
        return state, {**metrics, PRIORITY: priorities}

    return call
