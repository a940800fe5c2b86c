"""The learner across devices: one `data` mesh axis, replicated state, batches split along the batch axis.

An algorithm's `update` is written for one shard. The learner's fused call (`jaxrl_dist.distributed.fused`) runs it
under `jax.shard_map` over this mesh: each device takes its slice of every batch, and the algorithm reduces its
gradients with the `grad_reduce` it was built with, `axis_mean` (a `pmean` over `data`), so parameters and optimizer
state stay identical on every device. With one device the same code runs without a mesh and with the identity
reduction.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
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
