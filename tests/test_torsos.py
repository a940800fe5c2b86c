"""The Nature CNN's matmul convolutions compute the plain NCHW convolutions of its parameters, forward and backward."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.networks import NatureCNN


def reference(params: Any, frames: jax.Array) -> jax.Array:
    """The Nature CNN written out with NCHW `lax` convolutions, reading `NatureCNN`'s parameters (HWIO kernels)."""
    p = params["params"]
    x = frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8 else frames
    for i, stride in enumerate((4, 2, 1)):
        kernel = jnp.transpose(p[f"Conv_{i}"]["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
        x = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                         precision=jax.lax.Precision.HIGHEST)
        x = jax.nn.relu(x + p[f"Conv_{i}"]["bias"][:, None, None])
    x = jnp.transpose(x, (0, 2, 3, 1)).reshape(x.shape[0], -1)  # flattened in NHWC order, as flax convs give
    dense = p["MLP_0"]["Dense_0"]
    return jax.nn.relu(jnp.dot(x, dense["kernel"], precision=jax.lax.Precision.HIGHEST) + dense["bias"])


@pytest.mark.parametrize("matmul_convs", [True, False])
@pytest.mark.parametrize("shape, dtype", [((3, 4, 84, 84), np.uint8), ((2, 3, 101, 90), np.float32)])
def test_nature_cnn_matches_nchw_convolutions(shape: tuple[int, ...], dtype: type, matmul_convs: bool) -> None:
    """Atari frames, and an odd frame size (rows and columns no window reaches, non-square) of float input; the
    matrix-product convolutions and XLA's, with the same parameters."""
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, shape) if dtype == np.uint8 else rng.uniform(0.0, 1.0, shape)).astype(dtype)
    net = NatureCNN((64,), matmul_convs=matmul_convs)
    params = net.init(jax.random.PRNGKey(1), frames)
    got = jax.jit(net.apply)(params, frames)
    want = jax.jit(reference)(params, frames)
    assert got.shape == want.shape == (shape[0], 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))


def test_nature_cnn_gradients_match_nchw_convolutions() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (5, 4, 84, 84)).astype(np.uint8)
    net = NatureCNN((32,), matmul_convs=True)
    params = net.init(jax.random.PRNGKey(3), frames)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=(5, 32)), jnp.float32)

    def loss(apply: Any) -> Any:
        return jax.jit(jax.grad(lambda p: jnp.sum(weights * apply(p, frames))))

    got, want = loss(net.apply)(params), loss(reference)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        w = want
        for key in path:
            w = w[key.key]
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(jnp.abs(w).max()), err_msg=str(path))


def test_nature_cnn_on_cpu_has_no_convolution_gradients() -> None:
    """The CPU default: no convolutions at all, whose gradients XLA:CPU runs as naive loops inside a scan."""
    frames = np.zeros((2, 4, 84, 84), np.uint8)
    net = NatureCNN((16,))
    params = net.init(jax.random.PRNGKey(0), frames)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(net.apply(p, frames))))(params)
    assert jax.default_backend() != "cpu" or "conv_general_dilated" not in str(jaxpr)


def test_nature_cnn_parameters_are_flax_convs() -> None:
    """The parameter tree of `nn.Conv` layers (`Conv_i/kernel` HWIO), so that checkpoints before issue 16 load."""
    frames = np.zeros((1, 4, 84, 84), np.uint8)
    params = NatureCNN((512,), matmul_convs=True).init(jax.random.PRNGKey(0), frames)["params"]
    convs = NatureCNN((512,), matmul_convs=False).init(jax.random.PRNGKey(0), frames)["params"]
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert jax.tree.map(lambda a: a.shape, convs) == shapes == {"Conv_0": {"kernel": (8, 8, 4, 32), "bias": (32,)},
                      "Conv_1": {"kernel": (4, 4, 32, 64), "bias": (64,)},
                      "Conv_2": {"kernel": (3, 3, 64, 64), "bias": (64,)},
                      "MLP_0": {"Dense_0": {"kernel": (3136, 512), "bias": (512,)}}}
