"""PPO: clipped-surrogate policy optimisation on trajectory segments (on-policy, no replay).

The definition registers the config section and a `make` that imports the JAX code (`core`) when an algorithm is
built, so that loading a config stays light; `core`'s functions and records are attributes here too.
"""

from jaxrl_dist.algos.base import AlgorithmDef, lazy_attributes, lazy_make
from jaxrl_dist.algos.ppo.config import PPOConfig

PPO = AlgorithmDef(config=PPOConfig, make=lazy_make("jaxrl_dist.algos.ppo.core"), data="segments",
                   action_kinds=("discrete", "continuous", "multi_discrete"))

_CORE = ("PPOState", "PPOStep", "gae", "make")
__getattr__ = lazy_attributes("jaxrl_dist.algos.ppo.core", _CORE)
__all__ = ["PPO", "PPOConfig", *_CORE]
