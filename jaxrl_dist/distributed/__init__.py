"""Placement across devices: the learner's mesh and shardings, and the collectives injected into algorithms."""

from jaxrl_dist.distributed.mesh import DATA_AXIS, LearnerMesh, axis_mean, fused_update

__all__ = ["DATA_AXIS", "LearnerMesh", "axis_mean", "fused_update"]
