"""SAC's config section (`algo:` with `name: sac`)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from jaxrl_dist.config.schema import fld


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (continuous actions)."""

    name: Literal["sac"] = fld("sac", "Algorithm name.")
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    n_step: int = fld(1, "n-step returns (bootstrapping through truncations).", ge=1)
    actor_lr: float = fld(1e-3, "Adam learning rate of the policy.", gt=0.0)
    critic_lr: float = fld(1e-3, "Adam learning rate of the twin Q critics.", gt=0.0)
    alpha_lr: float = fld(1e-3, "Adam learning rate of the entropy temperature.", gt=0.0)
    init_alpha: float = fld(1.0, "Initial entropy temperature.", gt=0.0)
    target_entropy: Optional[float] = fld(None, "Entropy the temperature is tuned to; null: -action_dim.")
    tau: float = fld(0.005, "Polyak coefficient of the target critics per update.", gt=0.0, le=1.0)
    max_grad_norm: float = fld(0.0, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    warmup_steps: Optional[int] = fld(
        None, "Env steps (of this process, as train.learning_starts) of uniformly random actions within the bounds "
              "before the policy acts; null: until learning starts (SB3 / CleanRL), 0: none.", ge=0)
