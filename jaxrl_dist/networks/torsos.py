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


def _space_to_depth(x: jax.Array, r: int) -> jax.Array:
    """Channel-major `[C, B, H, W]` -> `[r * r * C, B, H / r, W / r]`, channels ordered `(dy, dx, c)`."""
    c, b, h, w = x.shape
    x = x.reshape(c, b, h // r, r, w // r, r).transpose(3, 5, 0, 1, 2, 4)
    return x.reshape(r * r * c, b, h // r, w // r)


def _kernel_space_to_depth(kernel: jax.Array, r: int) -> jax.Array:
    """An HWIO kernel `[k, k, C, F]` -> `[k / r, k / r, r * r * C, F]`, input channels ordered as `_space_to_depth`'s."""
    k, _, c, f = kernel.shape
    kernel = kernel.reshape(k // r, r, k // r, r, c, f).transpose(0, 2, 1, 3, 4, 5)
    return kernel.reshape(k // r, k // r, r * r * c, f)


class MatmulConv(nn.Module):
    """A VALID, strided, square 2-D convolution on channel-major activations, computed as one matrix product.

    Input `[C, B, H, W]` (uint8 or float), output `[F, B, OH, OW]` float32. The parameters are `nn.Conv`'s (`kernel`
    `[k, k, C, F]` HWIO, `bias` `[F]`), so the function is exactly a flax convolution of the NHWC input.

    Why not `lax.conv_general_dilated` (issue 16): inside a `lax.scan` (the learner's fused updates, PPO's
    minibatch loop) XLA:CPU leaves the backward convolutions in a non-canonical form and emits them as naive loops,
    10-30x slower than the same gradient outside a scan; and even outside, its 8x8/4 convolution on 4 channels runs
    at a few GFLOP/s, while its matrix products run near the machine's peak. So the stride is folded into channels
    (space-to-depth: an 8x8/4 conv is a 2x2/1 conv on 4x4 blocks), the stride-1 windows are concatenated along
    channels (im2col), and the conv is `kernel^T [F, K] @ patches [K, B * OH * OW]`. Channel-major keeps the long
    batch*positions axis innermost in both the patches and the output: the weight gradient then is an
    `[F, M] x [K, M]^T` product, about 5x faster here for the first conv than with NHWC-ordered `[M, K]` patches,
    which XLA transposes first.
    """

    features: int
    kernel_size: int
    stride: int
    input_scale: float = 1.0  # multiplies the input (1/255 for uint8 frames), folded into the kernel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        if k % s:
            raise ValueError(f"MatmulConv needs a kernel size divisible by the stride, got {k} and {s}")
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[0], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.input_scale != 1.0:
            kernel = kernel * self.input_scale
        oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        x = x[:, :, :(oh - 1) * s + k, :(ow - 1) * s + k]  # rows and columns no window reaches
        if s > 1:
            x, kernel, k = _space_to_depth(x, s), _kernel_space_to_depth(kernel, s), k // s
        patches = jnp.concatenate([x[:, :, i:i + oh, j:j + ow] for i in range(k) for j in range(k)], axis=0)
        depth, batch = patches.shape[0], x.shape[1]
        y = kernel.reshape(depth, self.features).T @ patches.reshape(depth, batch * oh * ow).astype(jnp.float32)
        return y.reshape(self.features, batch, oh, ow) + bias[:, None, None, None]


class NatureCNN(nn.Module):
    """The Nature-DQN convolutions (Mnih et al. 2015) followed by an MLP.

    Input `[B, C, H, W]` frames (`[B, 4, 84, 84]` for Atari), uint8 in [0, 255] (scaled here, so exported graphs
    take raw frames) or float. Output `[B, hidden[-1]]`. The parameters and the function are those of flax
    `nn.Conv` layers on the NHWC frames (`Conv_0..2`, then `MLP_0`), however the convolutions are computed.
    """

    hidden: Sequence[int] = (512,)
    activation: str = "relu"
    # Convolutions as matrix products on channel-major activations (`MatmulConv`), several times faster on XLA:CPU
    # and immune to its slow convolution gradients in a scan (issue 16); or XLA's own convolutions, which cuDNN
    # runs well. None: matrix products where the default backend is the CPU.
    matmul_convs: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layers = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
        act = ACTIVATIONS[self.activation]
        matmul = jax.default_backend() == "cpu" if self.matmul_convs is None else self.matmul_convs
        if matmul:
            scale = 1.0 / 255.0 if x.dtype == jnp.uint8 else 1.0
            x = jnp.transpose(x, (1, 0, 2, 3))  # EnvPool frames [B, C, H, W] -> channel-major [C, B, H, W]
            for i, (features, kernel, stride) in enumerate(layers):
                x = act(MatmulConv(features, kernel, stride, scale if i == 0 else 1.0, name=f"Conv_{i}")(x))
            x = jnp.transpose(x, (1, 2, 3, 0))  # [B, H, W, C]: the flatten order of flax's NHWC convolutions
        else:
            if x.dtype == jnp.uint8:
                x = x.astype(jnp.float32) / 255.0
            x = jnp.transpose(x, (0, 2, 3, 1))  # EnvPool frames are channels-first; flax convs are channels-last
            for features, kernel, stride in layers:
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
