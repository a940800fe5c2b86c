"""Placement across devices and processes: device names, the learner's mesh and shardings, its fused call, the
collectives injected into algorithms, MPI groups and `jax.distributed` processes."""

from jaxrl_dist.distributed.fused import CallOutput, fused_update, learner_call
from jaxrl_dist.distributed.mesh import DATA_AXIS, LearnerMesh, axis_mean

__all__ = ["DATA_AXIS", "CallOutput", "LearnerMesh", "axis_mean", "fused_update", "learner_call"]
