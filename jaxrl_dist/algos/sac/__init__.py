"""Soft Actor-Critic for continuous actions (Haarnoja et al. 2018).

The definition registers the config section and a `make` that imports the JAX code (`core`) when an algorithm is
built, so that loading a config stays light; `core`'s functions and records are attributes here too.
"""

from jaxrl_dist.algos.base import AlgorithmDef, lazy_attributes, lazy_make
from jaxrl_dist.algos.sac.config import SACConfig

SAC = AlgorithmDef(config=SACConfig, make=lazy_make("jaxrl_dist.algos.sac.core"), data="replay",
                   action_kinds=("continuous",))

_CORE = ("SACState", "make", "squashed_sample")
__getattr__ = lazy_attributes("jaxrl_dist.algos.sac.core", _CORE)
__all__ = ["SAC", "SACConfig", *_CORE]
