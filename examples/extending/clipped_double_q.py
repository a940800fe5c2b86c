"""Clipped double Q-learning for discrete actions: a jaxrl_dist algorithm written outside the package.

Two Q-networks learn side by side; the bootstrap target takes the action their mean prefers and the smaller of the
two target networks' values for it (the clipped double-Q target of TD3, Fujimoto et al. 2018, here for discrete
actions). Only public jaxrl_dist APIs are used: `AlgorithmDef`, `Algorithm`, `Transition`, the config field helper
`fld`, the torso factory and a few pure building blocks. Select it with
`algo.name: examples.extending.clipped_double_q:CLIPPED_DOUBLE_Q`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxrl_dist.algos import Algorithm, AlgorithmDef, BuildContext, Transition
from jaxrl_dist.algos.common import adam, epsilon_greedy, linear_schedule
from jaxrl_dist.config.schema import fld
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.networks import make_torso


@dataclasses.dataclass(frozen=True)
class ClippedDoubleQConfig:
    """Hyperparameters of clipped double Q-learning (the `algo` config section)."""

    name: str = fld("examples.extending.clipped_double_q:CLIPPED_DOUBLE_Q", "Algorithm name.")
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    n_step: int = fld(1, "n-step returns (computed by the replay writer).", ge=1)
    lr: float = fld(1e-3, "Adam learning rate.", gt=0.0)
    max_grad_norm: float = fld(10.0, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    tau: float = fld(0.01, "Polyak coefficient of the target networks per update.", gt=0.0, le=1.0)
    eps_start: float = fld(1.0, "Initial exploration epsilon.", ge=0.0, le=1.0)
    eps_end: float = fld(0.05, "Final exploration epsilon.", ge=0.0, le=1.0)
    eps_decay_steps: int = fld(10_000, "Env steps over which epsilon decays linearly.", ge=1)

    def check(self) -> None:
        if self.eps_end > self.eps_start:
            raise ConfigError(f"config key 'algo.eps_end': value {self.eps_end} is above algo.eps_start")


class TwinQ(nn.Module):
    """Two independent Q-networks: `[B, ...]` observations -> `[2, B, A]` action values."""

    torsos: tuple[nn.Module, nn.Module]
    num_actions: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.stack([nn.Dense(self.num_actions)(torso(obs)) for torso in self.torsos])


@flax.struct.dataclass
class TwinQState:
    params: Any
    target_params: Any
    opt_state: Any
    updates: jax.Array  # int32 []


def clipped_target(q_next_online: jax.Array, q_next_target: jax.Array, batch: Transition) -> jax.Array:
    """`[B]` bootstrap targets from `[2, B, A]` online and target values at `batch.next_obs`."""
    chex.assert_rank([q_next_online, q_next_target], 3)
    action = jnp.argmax(q_next_online.mean(axis=0), axis=-1)  # [B]
    picked = jnp.take_along_axis(q_next_target, action[None, :, None], axis=-1)[..., 0]  # [2, B]
    return batch.reward + batch.discount * picked.min(axis=0)


def make(spec: Any, algo: ClippedDoubleQConfig, context: BuildContext) -> Algorithm:
    """The pure functions of clipped double Q-learning for an env spec, its config section and the build context
    (network config, gradient reduction)."""
    net_cfg, grad_reduce = context.network, context.grad_reduce
    torsos = tuple(make_torso(net_cfg.torso, net_cfg.hidden, net_cfg.activation, net_cfg.kwargs) for _ in range(2))
    net = TwinQ(torsos, spec.num_actions)  # type: ignore[arg-type]
    optimizer = adam(algo.lr, max_grad_norm=algo.max_grad_norm)

    def init(key: jax.Array) -> TwinQState:
        params = net.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return TwinQState(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def loss(params: Any, target_params: Any, batch: Transition) -> tuple[jax.Array, dict[str, jax.Array]]:
        q = net.apply(params, batch.obs)  # [2, B, A]
        target = jax.lax.stop_gradient(
            clipped_target(net.apply(params, batch.next_obs), net.apply(target_params, batch.next_obs), batch)
        )
        taken = jnp.take_along_axis(q, batch.action[None, :, None].astype(jnp.int32), axis=-1)[..., 0]  # [2, B]
        value = jnp.mean(0.5 * jnp.square(taken - target[None]))
        return value, {"loss": value, "q_mean": taken.mean(), "q_gap": jnp.abs(taken[0] - taken[1]).mean()}

    def update(state: TwinQState, batch: Transition) -> tuple[TwinQState, dict[str, jax.Array]]:
        grads, metrics = jax.grad(loss, has_aux=True)(state.params, state.target_params, batch)
        changes, opt_state = optimizer.update(grad_reduce(grads), state.opt_state, state.params)
        params = optax.apply_updates(state.params, changes)
        target = optax.incremental_update(params, state.target_params, algo.tau)
        return TwinQState(params, target, opt_state, state.updates + 1), metrics

    def mean_q(params: Any, obs: jax.Array) -> jax.Array:
        return net.apply(params, obs).mean(axis=0)  # type: ignore[union-attr]

    def inference(params: Any, obs: jax.Array) -> dict[str, jax.Array]:
        q = mean_q(params, obs)
        return {"action": jnp.argmax(q, axis=-1).astype(jnp.int32), "q_values": q}

    return Algorithm(
        init=init,
        update=update,
        act=lambda params, obs, key, eps: epsilon_greedy(mean_q(params, obs), key, eps),
        eval_act=lambda params, obs: inference(params, obs)["action"],
        actor_params=lambda state: state.params,
        exploration=linear_schedule(algo.eps_start, algo.eps_end, algo.eps_decay_steps),
        inference=inference,
    )


CLIPPED_DOUBLE_Q = AlgorithmDef(config=ClippedDoubleQConfig, make=make, data="replay", action_kinds=("discrete",))
