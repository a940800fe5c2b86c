"""The learner across local devices: one `data` mesh axis, replicated state, batches split along the batch axis.

An algorithm's `update` is written for one shard. Here it runs under `jax.shard_map` over the mesh: each device
takes its slice of every batch, and the algorithm reduces its gradients with the `grad_reduce` it was built with,
`axis_mean` (a `pmean` over `data`), so parameters and optimizer state stay identical on every device. With one
device the same code runs without a mesh and with the identity reduction.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_dist.algos.base import GradReduce, no_reduce

DATA_AXIS = "data"


class AxisMean:
    """The gradient reduction of a sharded learner: the mean of every leaf over the `data` axis.

    `fold_in_shard(key)` gives each shard its own key (see `jaxrl_dist.algos.base.shard_key`).
    """

    def __call__(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: jax.lax.pmean(x, DATA_AXIS), tree)

    @staticmethod
    def fold_in_shard(key: jax.Array) -> jax.Array:
        return jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))


axis_mean = AxisMean()


@dataclasses.dataclass(frozen=True)
class LearnerMesh:
    """Where the learner runs: one device, or a `data` mesh over several.

    Attributes:
        devices: the learner devices, in mesh order.
        mesh: the `data` mesh (also for a single device, so that shardings have one form).
    """

    devices: tuple[jax.Device, ...]
    mesh: Mesh

    @classmethod
    def over(cls, devices: Sequence[jax.Device]) -> LearnerMesh:
        if not devices:
            raise ValueError("a learner needs at least one device")
        return cls(tuple(devices), Mesh(np.array(devices), (DATA_AXIS,)))

    @property
    def size(self) -> int:
        return len(self.devices)

    @property
    def grad_reduce(self) -> GradReduce:
        """What the algorithm is built with: `axis_mean` on a mesh of several devices, the identity on one."""
        return axis_mean if self.size > 1 else no_reduce

    @property
    def replicated(self) -> NamedSharding:
        """Learner state and parameters: a full copy on every device."""
        return NamedSharding(self.mesh, P())

    @property
    def batches(self) -> NamedSharding:
        """Stacked batches `[K, B, ...]`: split along `B`, so each device holds `[K, B / size, ...]`."""
        return NamedSharding(self.mesh, P(None, DATA_AXIS))

    @functools.cached_property
    def multiprocess(self) -> bool:
        """Whether the mesh spans several processes (`jax.distributed`)."""
        return any(d.process_index != self.devices[0].process_index for d in self.devices)

    def put_batches(self, host: Any) -> Any:
        """This process's `[K, B_local, ...]` numpy batches onto its shards: the global batch is every process's
        `B_local` concatenated (one process: `B_local` is the whole batch)."""
        if not self.multiprocess:
            return jax.device_put(host, self.batches)
        count = len({d.process_index for d in self.devices})

        def put(x: np.ndarray) -> jax.Array:
            shape = (x.shape[0], x.shape[1] * count, *x.shape[2:])
            return jax.make_array_from_process_local_data(self.batches, x, shape)

        return jax.tree.map(put, host)

    def put_replicated(self, tree: Any) -> Any:
        """A pytree (the same on every process) copied to every learner device."""
        if not self.multiprocess:
            return jax.device_put(tree, self.replicated)
        host = jax.device_get(tree)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), host)

    def local(self, tree: Any) -> Any:
        """The copy of replicated learner arrays on this process's first learner device: what actors, the
        evaluator and checkpoints read (an array spanning processes cannot be read as a whole)."""
        if not self.multiprocess:
            return tree
        return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)

    def check_batch(self, batch_size: int) -> None:
        """Raises ValueError unless the global batch splits evenly over the devices."""
        if batch_size % self.size:
            raise ValueError(f"batch size {batch_size} does not split over {self.size} learner devices")


def fuse(update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]) -> Callable[..., Any]:
    """`(state, batches [K, B, ...]) -> (state, mean metrics)`: K updates in one `lax.scan`, one dispatch."""

    def many(state: Any, batches: Any) -> tuple[Any, dict[str, jax.Array]]:
        state, metrics = jax.lax.scan(update, state, batches)
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
