"""Flax torsos and heads shared by the algorithms."""

from jaxrl_dist.networks.torsos import MLP, NatureCNN, make_torso, resolve_torso
from jaxrl_dist.networks.heads import QHead

__all__ = ["MLP", "NatureCNN", "QHead", "make_torso", "resolve_torso"]
