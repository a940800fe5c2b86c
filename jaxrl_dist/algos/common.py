"""Small pure building blocks shared by the built-in algorithms and offered to users' own (see
docs/extending.md)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def adam(lr: float, eps: float = 1e-8, max_grad_norm: float = 0.0) -> optax.GradientTransformation:
    """Adam, after a global gradient-norm clip when `max_grad_norm` > 0."""
    clip = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm > 0 else []
    return optax.chain(*clip, optax.adam(lr, eps=eps))


def epsilon_greedy(q: jax.Array, key: jax.Array, eps: Any, sizes: jax.Array | np.ndarray | None = None
                   ) -> tuple[jax.Array, jax.Array]:
    """Epsilon-greedy actions from action values, one coin per action (per dimension of a multi-discrete one).

    Args:
        q: `[B, A]` action values, or `[B, D, A]` for D action dimensions (`per_dimension`'s layout).
        key: a PRNG key; the next key is returned.
        eps: the probability of a uniformly random action (a scalar, traced or not).
        sizes: `[D]` int, the actions of each dimension when `q` is padded to `A` (`per_dimension`); None: `A`.

    Returns:
        `(actions [B] or [B, D] int32, next key)`.
    """
    # One split and one uniform draw per call: threefry calls dominate this tiny function on CPU (3x slower
    # with separate draws for the coin and the random action).
    key, sub = jax.random.split(key)
    num_actions = q.shape[-1] if sizes is None else sizes
    u = jax.random.uniform(sub, (2, *q.shape[:-1]))
    random = jnp.minimum((u[1] * num_actions).astype(jnp.int32), num_actions - 1)
    return jnp.where(u[0] < eps, random, jnp.argmax(q, axis=-1)).astype(jnp.int32), key


PAD = -1e9
"""What `per_dimension` puts in the entries a dimension does not have: far below any value or logit a network
gives, so they are never a maximum and have probability 0 exactly under a softmax (finite: a product with a zero
probability stays 0 where -inf would give NaN)."""


def per_dimension(x: jax.Array, nvec: tuple[int, ...]) -> jax.Array:
    """Per-dimension outputs of a multi-discrete head: `[..., sum(nvec)]` (dimension d's `nvec[d]` entries one
    after the other) -> `[..., D, max(nvec)]`, dimension d's row padded with `PAD` after its own entries.

    Equal sizes (a Discrete space is `nvec = (n,)`) are a reshape; otherwise a gather with the index built here.
    """
    sizes = np.asarray(nvec)
    width = int(sizes.max())
    if (sizes == width).all():
        return x.reshape(*x.shape[:-1], len(nvec), width)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    j = np.arange(width)
    index = offsets[:, None] + np.minimum(j[None], sizes[:, None] - 1)  # [D, max(nvec)], in range everywhere
    return jnp.where(j[None] < sizes[:, None], x[..., index], jnp.asarray(PAD, x.dtype))


def linear_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """`t -> start + min(1, t / steps) * (end - start)`: an exploration schedule over env steps."""

    def value(t: int) -> float:
        return start + min(1.0, t / steps) * (end - start)

    return value
