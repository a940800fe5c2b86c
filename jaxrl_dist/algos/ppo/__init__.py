"""PPO: clipped-surrogate policy optimisation on trajectory segments (on-policy, no replay)."""

from jaxrl_dist.algos.base import AlgorithmDef
from jaxrl_dist.algos.ppo.core import PPOState, PPOStep, gae, make
from jaxrl_dist.config.schema import PPOConfig

PPO = AlgorithmDef(config=PPOConfig, make=make, data="segments", action_kinds=("discrete", "continuous"))

__all__ = ["PPO", "PPOState", "PPOStep", "gae", "make"]
