"""Feature extractors: an MLP for vector observations, the Nature-DQN CNN for stacked frames."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrl_dist.errors import UserError
from jaxrl_dist.plugins import import_object, is_plugin_path

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


BUILTIN_TORSOS = ("mlp", "nature_cnn")


def resolve_torso(kind: str, kwargs: dict[str, Any] | None = None) -> type[nn.Module] | None:
    """The class of a custom torso `package.module:Class`, checked against its keyword arguments; None for a
    built-in name.

    Raises:
        UserError: An unknown built-in name, a module that does not import, a class that is not a flax Module, or
            keyword arguments its constructor does not take.
    """
    if not is_plugin_path(kind):
        if kind not in BUILTIN_TORSOS:
            raise UserError(f"network torso {kind!r} is not allowed; allowed: {', '.join(BUILTIN_TORSOS)}, or "
                            f"'package.module:Class' of a flax.linen.Module")
        return None
    cls = import_object(kind, "custom torso")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"custom torso '{kind}' is not a flax.linen.Module subclass")
    try:
        inspect.signature(cls).bind(**(kwargs or {}))
    except TypeError as e:
        raise UserError(f"custom torso '{kind}': network.kwargs {sorted(kwargs or {})} do not fit its fields: {e}"
                        ) from None
    return cls


def make_torso(kind: str, hidden: Sequence[int], activation: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The torso named by `network.torso`: `[B, ...]` observations -> `[B, F]` features.

    A custom torso (`package.module:Class`) is built as `Class(**kwargs)`; `hidden` and `activation` configure the
    built-in ones only.
    """
    custom = resolve_torso(kind, kwargs)
    if custom is not None:
        return custom(**(kwargs or {}))
    if kind == "nature_cnn":
        return NatureCNN(tuple(hidden), activation)
    return MLP(tuple(hidden), activation)
