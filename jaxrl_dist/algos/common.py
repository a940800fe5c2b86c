"""Small pure building blocks shared by the built-in algorithms and offered to users' own (see the README,
"Extending jaxrl_dist")."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def adam(lr: float, eps: float = 1e-8, max_grad_norm: float = 0.0) -> optax.GradientTransformation:
    """Adam, after a global gradient-norm clip when `max_grad_norm` > 0."""
    clip = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm > 0 else []
    return optax.chain(*clip, optax.adam(lr, eps=eps))


def epsilon_greedy(q: jax.Array, key: jax.Array, eps: Any) -> tuple[jax.Array, jax.Array]:
    """Epsilon-greedy actions from action values.

    Args:
        q: `[B, A]` action values.
        key: a PRNG key; the next key is returned.
        eps: the probability of a uniformly random action (a scalar, traced or not).

    Returns:
        `(actions [B] int32, next key)`.
    """
    # One split and one uniform draw per call: threefry calls dominate this tiny function on CPU (3x slower
    # with separate draws for the coin and the random action).
    key, sub = jax.random.split(key)
    batch, num_actions = q.shape
    u = jax.random.uniform(sub, (2, batch))
    random = jnp.minimum((u[1] * num_actions).astype(jnp.int32), num_actions - 1)
    return jnp.where(u[0] < eps, random, jnp.argmax(q, axis=-1)).astype(jnp.int32), key


def linear_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """`t -> start + min(1, t / steps) * (end - start)`: an exploration schedule over env steps."""

    def value(t: int) -> float:
        return start + min(1.0, t / steps) * (end - start)

    return value
