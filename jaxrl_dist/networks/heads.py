"""Output heads."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class QHead(nn.Module):
    """Action values from a torso, optionally dueling (Wang et al. 2016).

    Input observations `[B, ...]`; output `[B, num_actions]` float32. With `nvec` (a multi-discrete action space,
    `num_actions = sum(nvec)`), the output is each dimension's values one after the other, and a dueling head
    shares its state value between the dimensions and centres each dimension's advantages on their own mean (the
    action-branching architecture of Tavakoli et al. 2018).
    """

    torso: nn.Module
    num_actions: int
    dueling: bool = False
    nvec: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        features = self.torso(obs)
        if not self.dueling:
            return nn.Dense(self.num_actions)(features)
        value = nn.Dense(1)(features)
        advantage = nn.Dense(self.num_actions)(features)
        # Subtracting the mean advantage makes value and advantage identifiable.
        if not self.nvec:
            return value + advantage - advantage.mean(axis=-1, keepdims=True)
        parts = jnp.split(advantage, np.cumsum(self.nvec)[:-1].tolist(), axis=-1)
        return value + jnp.concatenate([a - a.mean(axis=-1, keepdims=True) for a in parts], axis=-1)
