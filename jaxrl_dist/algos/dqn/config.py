"""DQN's config section (`algo:` with `name: dqn`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jaxrl_dist.config.schema import fld
from jaxrl_dist.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """DQN / Double DQN hyperparameters."""

    name: Literal["dqn"] = fld("dqn", "Algorithm name.")
    double: bool = fld(True, "Double DQN: the online network picks the bootstrap action.")
    lr: float = fld(1e-3, "Adam learning rate.", gt=0.0)
    adam_eps: float = fld(1e-8, "Adam epsilon.", gt=0.0)
    max_grad_norm: float = fld(10.0, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    n_step: int = fld(1, "n-step returns (bootstrapping through truncations).", ge=1)
    loss: Literal["huber", "mse"] = fld("huber", "TD loss.")
    target_update: Literal["period", "polyak"] = fld("period", "Hard copy every target_period updates, or Polyak.")
    target_period: int = fld(500, "Updates between hard target copies (target_update=period).", ge=1)
    tau: float = fld(0.005, "Polyak coefficient per update (target_update=polyak).", gt=0.0, le=1.0)
    eps_start: float = fld(1.0, "Initial exploration epsilon.", ge=0.0, le=1.0)
    eps_end: float = fld(0.05, "Final exploration epsilon.", ge=0.0, le=1.0)
    eps_decay_steps: int = fld(10_000, "Env steps over which epsilon decays linearly.", ge=1)

    def check(self) -> None:
        """Rules between fields (called by `jaxrl_dist.config.plan`); raises ConfigError."""
        if self.eps_end > self.eps_start:
            raise ConfigError(
                f"config key 'algo.eps_end': value {self.eps_end} is above algo.eps_start={self.eps_start}; "
                f"allowed: <= {self.eps_start}"
            )
