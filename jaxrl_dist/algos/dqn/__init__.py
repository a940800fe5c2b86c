"""DQN and Double DQN (Mnih et al. 2015; van Hasselt et al. 2016)."""

from jaxrl_dist.algos.dqn.core import DQNState, make, td_loss

__all__ = ["DQNState", "make", "td_loss"]
