"""PPO's config section (`algo:` with `name: ppo`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxrl_dist.config.schema import fld
from jaxrl_dist.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (on-policy: trajectory segments, no replay)."""

    name: Literal["ppo"] = fld("ppo", "Algorithm name.")
    segment_length: int = fld(32, "Env steps per actor env in one segment (T); one learner update per segment.", ge=1)
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    gae_lambda: float = fld(0.95, "GAE lambda.", ge=0.0, le=1.0)
    lr: float = fld(3e-4, "Adam learning rate.", gt=0.0)
    anneal_lr: bool = fld(False, "Decay the learning rate linearly to 0 over train.total_env_steps.")
    adam_eps: float = fld(1e-5, "Adam epsilon.", gt=0.0)
    max_grad_norm: float = fld(0.5, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    epochs: int = fld(4, "Passes over each segment.", ge=1)
    num_minibatches: int = fld(4, "Minibatches per epoch (split along the segment's time axis).", ge=1)
    clip_eps: float = fld(0.2, "Clip range of the probability ratio.", gt=0.0)
    value_clip_eps: float = fld(0.2, "Clip range of the value update around the old value; 0 disables it.", ge=0.0)
    vf_coef: float = fld(0.5, "Value loss coefficient.", ge=0.0)
    ent_coef: float = fld(0.0, "Entropy bonus coefficient.", ge=0.0)
    normalize_advantages: bool = fld(True, "Standardise advantages per minibatch.")
    shared_trunk: bool = fld(False, "One torso under both the policy and the value head (CleanRL's Atari agent); "
                                    "false: a torso each (better for small MLP tasks).")

    def check(self) -> None:
        """Rules between fields (called by `jaxrl_dist.config.plan`); raises ConfigError."""
        if self.segment_length % self.num_minibatches:
            raise ConfigError(
                f"config key 'algo.num_minibatches': value {self.num_minibatches} does not divide "
                f"algo.segment_length={self.segment_length} (minibatches split the time axis); allowed: a divisor"
            )
