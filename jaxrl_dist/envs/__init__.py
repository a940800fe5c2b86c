"""Vectorized environments: EnvPool, and Python envs (`BaseEnv` or `gymnasium.Env` classes, functions returning an
env, gymnasium ids) stepped inline or in subprocess workers, behind one `VecEnv` interface.

Start with `make_env`; see `vector` for the backends, `loading` for the `env.id` forms, `serial` for the step
semantics all of them share, `subproc` for the workers and `observations` for the spaces.
"""

from jaxrl_dist.envs.base import BaseEnv, Box, Discrete
from jaxrl_dist.envs.spec import EnvSpec, StepBatch
from jaxrl_dist.envs.stats import EpisodeStats
from jaxrl_dist.envs.vector import VecEnv, make_env
from jaxrl_dist.envs.wrappers import VecEnvWrapper

__all__ = ["BaseEnv", "Box", "Discrete", "EnvSpec", "EpisodeStats", "StepBatch", "VecEnv", "VecEnvWrapper", "make_env"]
