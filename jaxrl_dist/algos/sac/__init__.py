"""Soft Actor-Critic for continuous actions (Haarnoja et al. 2018)."""

from jaxrl_dist.algos.base import AlgorithmDef
from jaxrl_dist.algos.sac.core import SACState, make, squashed_sample
from jaxrl_dist.config.schema import SACConfig

SAC = AlgorithmDef(config=SACConfig, make=make, data="replay", action_kinds=("continuous",))

__all__ = ["SAC", "SACState", "make", "squashed_sample"]
