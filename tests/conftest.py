"""Session fixtures shared by test modules: the real Slurm cluster of tests/slurm_cluster.py."""

from slurm_cluster import slurm_cluster

__all__ = ["slurm_cluster"]
