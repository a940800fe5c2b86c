"""DQN and Double DQN (Mnih et al. 2015; van Hasselt et al. 2016).

The definition registers the config section and a `make` that imports the JAX code (`core`) when an algorithm is
built, so that loading a config stays light; `core`'s functions and records are attributes here too.
"""

from jaxrl_dist.algos.base import AlgorithmDef, lazy_attributes, lazy_make
from jaxrl_dist.algos.dqn.config import DQNConfig

DQN = AlgorithmDef(config=DQNConfig, make=lazy_make("jaxrl_dist.algos.dqn.core"), data="replay",
                   action_kinds=("discrete", "multi_discrete"))

_CORE = ("DQNState", "make", "td_loss")
__getattr__ = lazy_attributes("jaxrl_dist.algos.dqn.core", _CORE)
__all__ = ["DQN", "DQNConfig", *_CORE]
