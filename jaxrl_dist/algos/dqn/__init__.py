"""DQN and Double DQN (Mnih et al. 2015; van Hasselt et al. 2016)."""

from jaxrl_dist.algos.base import AlgorithmDef
from jaxrl_dist.algos.dqn.core import DQNState, make, td_loss
from jaxrl_dist.config.schema import DQNConfig

DQN = AlgorithmDef(config=DQNConfig, make=make, data="replay", action_kinds=("discrete",))

__all__ = ["DQN", "DQNState", "make", "td_loss"]
