"""The learner's jitted call: K updates fused into one `lax.scan`, sharded over the learner mesh where it has several
devices, the learner state donated (a device holds one copy of it, not an input and an output copy), and, for
prioritized replay, every update's per-sample priorities carried out of the call.

Metrics are averaged over the K updates of a call (and over the devices), which suits scalars. Prioritized replay
needs each update's `[B]` priorities, so the scan then carries a `[K, B]` array next to the learner state and each
update writes its row. On a `data` mesh every shard computes the priorities of its slice of the batch; they are
gathered along the batch axis (the slices' order is the sharding's), so the returned array is the whole `[K, B]` on
every device, like the state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxrl_dist.algos.base import metrics_of
from jaxrl_dist.distributed.mesh import DATA_AXIS, LearnerMesh, axis_mean
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


def fuse(update: Callable[[Any, Any], tuple[Any, Any]], priorities: bool = False, shards: int = 1
         ) -> Callable[[Any, Any], CallOutput]:
    """`(state, batches [K, B, ...]) -> CallOutput`: K updates in one `lax.scan`, one dispatch (not jitted).

    Args:
        update: the algorithm's update for one shard.
        priorities: carry out each update's priorities (its output for a `PrioritizedBatch` is `Prioritized`).
        shards: devices of the `data` axis this runs under (`shard_map`); the priority rows are gathered over them.
    """

    def plain(state: Any, batches: Any) -> CallOutput:
        def step(state: Any, batch: Any) -> tuple[Any, dict[str, jax.Array]]:
            state, out = update(state, batch)
            return state, metrics_of(out)

        state, metrics = jax.lax.scan(step, state, batches)
        return CallOutput(state, jax.tree.map(jnp.mean, metrics))

    def with_priorities(state: Any, batches: Any) -> CallOutput:
        k, b = batches.weight.shape[0], batches.weight.shape[1] * shards

        def step(carry: tuple[Any, jax.Array, jax.Array], batch: Any) -> tuple[Any, dict[str, jax.Array]]:
            state, rows, i = carry
            state, out = update(state, batch)
            assert isinstance(out, Prioritized), "checked by the plan (jaxrl_dist.config.plan)"
            row = out.priority.astype(jnp.float32)
            if shards > 1:
                row = jax.lax.all_gather(row, DATA_AXIS, tiled=True)
            return (state, jax.lax.dynamic_update_index_in_dim(rows, row, i, 0), i + 1), out.metrics

        init = (state, jnp.zeros((k, b), jnp.float32), jnp.int32(0))
        (state, rows, _), metrics = jax.lax.scan(step, init, batches)
        return CallOutput(state, jax.tree.map(jnp.mean, metrics), rows)

    return with_priorities if priorities else plain


def learner_call(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None,
                 prioritized: bool = False, donate: bool | None = None) -> Callable[[Any, Any], CallOutput]:
    """The learner's jitted call: K fused updates, sharded over `placement` when it has several devices (None: one
    device, wherever the state is), with the state (argument 0) donated on accelerators.

    `update` must come from an algorithm built with `placement.grad_reduce`. On a mesh, its metrics are averaged
    over the devices too.

    `check_vma=False` keeps the per-shard semantics the algorithms are written for: with the check on, JAX would
    already sum the gradients of replicated parameters over the devices inside `jax.grad`, and the injected mean
    would then see (and the optimizer get) the sum, not the mean.

    Donation (`donate`; None: where the learner devices are not CPUs): the state passed in is invalid after the
    call (its buffers hold the new state), so a GPU holds one copy of it, not an input and an output copy. Whoever
    needs an old state after the next call takes a copy first (the learner's snapshots and parameter hand-off do).
    On CPUs host memory is plentiful and those copies are not: without donation the old state stays valid, and the
    hand-off passes the parameters as they are. The returned call's `donates` says which it does.
    """
    if donate is None:
        platform = placement.devices[0].platform if placement is not None else jax.default_backend()
        donate = platform != "cpu"
    donated = (0,) if donate else ()
    if placement is None or placement.size == 1:
        return _marked(_own_buffers(jax.jit(fuse(update, prioritized), donate_argnums=donated)), donate)
    many = fuse(update, prioritized, placement.size)

    def per_shard(state: Any, batches: Any) -> CallOutput:
        out = many(state, batches)
        return out._replace(metrics=axis_mean(out.metrics))

    out_specs = CallOutput(P(), P(), P() if prioritized else None)  # type: ignore[arg-type]  # specs, not values
    sharded = jax.jit(jax.shard_map(per_shard, mesh=placement.mesh, in_specs=(P(), P(None, DATA_AXIS)),
                                    out_specs=out_specs, check_vma=False), donate_argnums=donated)
    if placement.devices[0].platform != "cpu":
        return _marked(_own_buffers(sharded), donate)

    def one_at_a_time(state: Any, batches: Any) -> CallOutput:
        # XLA:CPU runs each (fake) device's part on a shared thread pool; with several calls in flight their
        # all-reduces can take every thread and wait for each other until XLA aborts the process (a 60 s rendezvous
        # timeout). One call in flight at a time avoids it; on CPU the overlap it costs is small.
        return jax.block_until_ready(sharded(state, batches))

    return _marked(_own_buffers(one_at_a_time), donate)


def _marked(call: Callable[[Any, Any], CallOutput], donates: bool) -> Callable[[Any, Any], CallOutput]:
    call.donates = donates  # type: ignore[attr-defined]
    return call


def _own_buffers(call: Callable[[Any, Any], CallOutput]) -> Callable[[Any, Any], CallOutput]:
    """`call` given a state in which no buffer appears twice: a donated buffer cannot be donated twice, and a state
    built outside jit may share one between leaves (DQN's target parameters start as its parameters). A state that
    is the call's own last output is passed as it is (XLA gives each output a buffer of its own); any other is
    checked once. `.jitted` is the jitted call."""
    last: list[Any] = [None]

    def own(state: Any, batches: Any) -> CallOutput:
        if state is not last[0]:
            state = distinct_buffers(state)
        out = call(state, batches)
        last[0] = out.state
        return out

    own.jitted = call  # type: ignore[attr-defined]
    return own


def distinct_buffers(tree: Any) -> Any:
    """`tree` with a copy of every array whose device buffer an earlier leaf already holds."""
    seen: set[int] = set()

    def first(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        key = x.addressable_shards[0].data.unsafe_buffer_pointer()
        if key in seen:
            return jax.device_put(x, x.sharding, may_alias=False)
        seen.add(key)
        return x

    return jax.tree.map(first, tree)


def fused_update(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None
                 ) -> Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]:
    """`(state, batches) -> (state, metrics)`: the learner's call for plain batches, as a pair (for benchmarks and
    tests that drive an update themselves). The state is donated, as in `learner_call`."""
    call = learner_call(update, placement)

    def pair(state: Any, batches: Any) -> tuple[Any, dict[str, jax.Array]]:
        out = call(state, batches)
        return out.state, out.metrics

    return pair


def fused_with_priorities(update: Callable[[Any, Any], tuple[Any, Any]], placement: LearnerMesh | None
                          ) -> Callable[[Any, Any], CallOutput]:
    """The learner's call for `PrioritizedBatch`es: `CallOutput` with `priority` `[K, B]` float32."""
    return learner_call(update, placement, prioritized=True)
