"""A custom network torso written outside jaxrl_dist: an MLP with LayerNorm after every hidden layer.

Select it with `network.torso: examples.extending.torsos:LayerNormMLP` and its fields in `network.kwargs`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class LayerNormMLP(nn.Module):
    """`[B, ...]` observations -> `[B, sizes[-1]]` features: Dense -> LayerNorm -> ReLU per layer."""

    sizes: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        for size in self.sizes:
            x = nn.relu(nn.LayerNorm()(nn.Dense(size)(x)))
        return x
