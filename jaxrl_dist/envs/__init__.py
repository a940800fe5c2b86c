"""Vectorized environments: EnvPool, custom `BaseEnv` subclasses and gymnasium ids behind one `VecEnv` interface.

Start with `make_env`; see `vector` for the backends, `serial` for the step semantics all of them share.
"""

from jaxrl_dist.envs.base import BaseEnv, Box, Discrete
from jaxrl_dist.envs.spec import EnvSpec, StepBatch
from jaxrl_dist.envs.stats import EpisodeStats
from jaxrl_dist.envs.vector import VecEnv, make_env
from jaxrl_dist.envs.wrappers import VecEnvWrapper

__all__ = ["BaseEnv", "Box", "Discrete", "EnvSpec", "EpisodeStats", "StepBatch", "VecEnv", "VecEnvWrapper", "make_env"]
