"""Feature extractors: an MLP for vector observations, the Nature-DQN CNN for stacked frames."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


class MLP(nn.Module):
    """Dense layers with an activation after each.

    Input `[B, ...]` (flattened after the batch axis), output `[B, hidden[-1]]`.
    """

    hidden: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        act = ACTIVATIONS[self.activation]
        for size in self.hidden:
            x = act(nn.Dense(size)(x))
        return x


class NatureCNN(nn.Module):
    """The Nature-DQN convolutions (Mnih et al. 2015) followed by an MLP.

    Input `[B, C, 84, 84]` frames, uint8 in [0, 255] (scaled here, so exported graphs take raw frames) or float.
    Output `[B, hidden[-1]]`.
    """

    hidden: Sequence[int] = (512,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        x = jnp.transpose(x, (0, 2, 3, 1))  # EnvPool frames are channels-first; flax convs are channels-last
        act = ACTIVATIONS[self.activation]
        for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = act(nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID")(x))
        return MLP(self.hidden, self.activation)(x)


def make_torso(kind: str, hidden: Sequence[int], activation: str) -> nn.Module:
    """The torso named by `network.torso`."""
    if kind == "nature_cnn":
        return NatureCNN(tuple(hidden), activation)
    return MLP(tuple(hidden), activation)
