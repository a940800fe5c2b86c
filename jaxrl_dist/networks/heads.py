"""Output heads."""

from __future__ import annotations

import flax.linen as nn
import jax


class QHead(nn.Module):
    """Action values from a torso, optionally dueling (Wang et al. 2016).

    Input observations `[B, ...]`; output `[B, num_actions]` float32.
    """

    torso: nn.Module
    num_actions: int
    dueling: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        features = self.torso(obs)
        if not self.dueling:
            return nn.Dense(self.num_actions)(features)
        value = nn.Dense(1)(features)
        advantage = nn.Dense(self.num_actions)(features)
        # Subtracting the mean advantage makes value and advantage identifiable.
        return value + advantage - advantage.mean(axis=-1, keepdims=True)
