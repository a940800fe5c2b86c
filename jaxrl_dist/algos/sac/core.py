"""Soft Actor-Critic (Haarnoja et al. 2018) as pure functions: twin Q critics with Polyak targets, a tanh-squashed
Gaussian policy, and automatic entropy tuning. Actions are scaled to the env's bounds inside the policy, so actors,
evaluation and exported graphs all emit env actions.

Until learning starts (`algo.warmup_steps`, by default the run's `learning_starts`) the actors act uniformly at
random within the bounds, as SB3 and CleanRL do: the first updates then learn from actions that cover the box, not
from the narrow samples of an untrained policy. The warm-up is the algorithm's exploration schedule (`exploration`:
the probability of a uniform action, 1 then 0), which the actor evaluates at its env steps and hands to `act`.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_dist.algos.base import Algorithm, BuildContext, Transition, entropy_explorer, shard_key
from jaxrl_dist.algos.common import adam
from jaxrl_dist.algos.sac.config import SACConfig
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.errors import UserError
from jaxrl_dist.networks import make_torso

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianPolicy(nn.Module):
    """`[B, ...]` observations -> `(mean [B, A], log_std [B, A])` of the pre-tanh Gaussian."""

    torso: nn.Module
    action_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        features = self.torso(obs)
        mean = nn.Dense(self.action_dim)(features)
        log_std = nn.Dense(self.action_dim)(features)
        # A smooth squash into [LOG_STD_MIN, LOG_STD_MAX] keeps gradients where a clip would cut them.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class TwinQ(nn.Module):
    """`([B, ...] observations, [B, A] actions) -> [2, B]` values of two independent critics."""

    torsos: tuple[nn.Module, nn.Module]

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs.reshape(obs.shape[0], -1).astype(jnp.float32), action], axis=-1)
        return jnp.stack([nn.Dense(1)(torso(x))[:, 0] for torso in self.torsos])


@flax.struct.dataclass
class SACState:
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array  # [] float32
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    key: jax.Array  # the PRNG key of the update's policy samples (the same on every shard)
    steps: jax.Array  # int32 [], updates done


def squashed_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised tanh-Gaussian sample `[B, A]` in [-1, 1] and its log-probability `[B]`."""
    chex.assert_equal_shape([mean, log_std])
    noise = jax.random.normal(key, mean.shape)
    pre = mean + jnp.exp(log_std) * noise
    log_prob = jnp.sum(-0.5 * noise**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)
    # log |d tanh(u) / du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form.
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - pre - jax.nn.softplus(-2.0 * pre)), axis=-1)
    return jnp.tanh(pre), log_prob


def make(spec: EnvSpec, algo: SACConfig, context: BuildContext) -> Algorithm:
    """Builds SAC's pure functions for an env spec, its config section and the build context."""
    if spec.action_kind != "continuous":
        raise ValueError(f"SAC needs a continuous action space, got {spec.action_kind}")
    net_cfg, grad_reduce = context.network, context.grad_reduce
    action_dim = math.prod(spec.action_shape)
    if not all(map(math.isfinite, (*spec.action_low, *spec.action_high))):
        raise UserError(f"SAC scales its actions to the env's bounds, but the env has unbounded actions "
                        f"(low {spec.action_low}, high {spec.action_high}); wrap it to give finite bounds")
    low = np.asarray(spec.action_low, np.float32).reshape(spec.action_shape)
    high = np.asarray(spec.action_high, np.float32).reshape(spec.action_shape)

    def torso() -> nn.Module:
        return make_torso(net_cfg.torso, net_cfg.hidden, net_cfg.activation, net_cfg.kwargs)

    policy = GaussianPolicy(torso(), action_dim)
    critic = TwinQ((torso(), torso()))
    actor_opt, critic_opt = adam(algo.actor_lr, max_grad_norm=algo.max_grad_norm), adam(algo.critic_lr)
    alpha_opt = optax.adam(algo.alpha_lr)
    target_entropy = -float(action_dim) if algo.target_entropy is None else algo.target_entropy
    obs0 = np.zeros((1, *spec.obs_shape), spec.obs_dtype)

    def pi(params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`[B, ...]` observations -> pre-tanh `(mean, log_std)` `[B, A]`."""
        return policy.apply(params, obs)  # type: ignore[return-value]  # apply is typed for mutable collections too

    def q(params: Any, obs: jax.Array, unit_action: jax.Array) -> jax.Array:
        """`[B, ...]` observations and [-1, 1] actions `[B, A]` -> `[2, B]` twin values."""
        return critic.apply(params, obs, unit_action)  # type: ignore[return-value]

    def to_env(unit: jax.Array) -> jax.Array:
        """[-1, 1] actions `[B, A]` -> env actions `[B, *action_shape]` within the bounds."""
        unit = unit.reshape(unit.shape[0], *spec.action_shape)
        return 0.5 * (unit + 1.0) * (high - low) + low

    def to_unit(action: jax.Array) -> jax.Array:
        """Env actions from the replay -> [-1, 1] `[B, A]`."""
        unit = 2.0 * (action - low) / (high - low) - 1.0
        return jnp.clip(unit.reshape(unit.shape[0], action_dim), -1.0, 1.0)

    def init(key: jax.Array) -> SACState:
        k_actor, k_critic, k_update = jax.random.split(key, 3)
        actor = policy.init(k_actor, obs0)
        critic_params = critic.init(k_critic, obs0, jnp.zeros((1, action_dim)))
        log_alpha = jnp.log(jnp.float32(algo.init_alpha))
        return SACState(actor, critic_params, critic_params, log_alpha, actor_opt.init(actor),
                        critic_opt.init(critic_params), alpha_opt.init(log_alpha), k_update, jnp.zeros((), jnp.int32))

    def critic_loss(params: Any, state: SACState, batch: Transition, key: jax.Array) -> tuple[jax.Array, Any]:
        mean, log_std = pi(state.actor, batch.next_obs)
        next_action, next_log_prob = squashed_sample(mean, log_std, key)
        next_q = q(state.target_critic, batch.next_obs, next_action).min(axis=0)
        alpha = jnp.exp(state.log_alpha)
        target = jax.lax.stop_gradient(batch.reward + batch.discount * (next_q - alpha * next_log_prob))
        values = q(params, batch.obs, to_unit(batch.action))  # [2, B]
        loss = 0.5 * jnp.mean(jnp.square(values - target[None]))
        return loss, {"critic_loss": loss, "q_mean": values.mean()}

    def actor_loss(params: Any, state: SACState, batch: Transition, key: jax.Array) -> tuple[jax.Array, Any]:
        mean, log_std = pi(params, batch.obs)
        action, log_prob = squashed_sample(mean, log_std, key)
        value = q(state.critic, batch.obs, action).min(axis=0)
        loss = jnp.mean(jnp.exp(state.log_alpha) * log_prob - value)
        return loss, {"actor_loss": loss, "entropy": -log_prob.mean()}

    def alpha_loss(log_alpha: jax.Array, entropy: jax.Array) -> jax.Array:
        return log_alpha * jax.lax.stop_gradient(entropy - target_entropy)

    def update(state: SACState, batch: Transition) -> tuple[SACState, dict[str, jax.Array]]:
        chex.assert_rank([batch.reward, batch.discount], 1)
        key, k_critic, k_actor = jax.random.split(state.key, 3)
        k_critic, k_actor = shard_key(grad_reduce, k_critic), shard_key(grad_reduce, k_actor)
        c_grads, c_metrics = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch, k_critic)
        c_updates, c_opt = critic_opt.update(grad_reduce(c_grads), state.critic_opt, state.critic)
        critic_params = optax.apply_updates(state.critic, c_updates)
        state = SACState(state.actor, critic_params, state.target_critic, state.log_alpha, state.actor_opt, c_opt,
                         state.alpha_opt, key, state.steps)
        a_grads, a_metrics = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch, k_actor)
        a_updates, a_opt = actor_opt.update(grad_reduce(a_grads), state.actor_opt, state.actor)
        actor_params = optax.apply_updates(state.actor, a_updates)
        al_grad = grad_reduce(jax.grad(alpha_loss)(state.log_alpha, a_metrics["entropy"]))
        al_updates, al_opt = alpha_opt.update(al_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, al_updates)
        target = optax.incremental_update(critic_params, state.target_critic, algo.tau)
        new = SACState(actor_params, critic_params, target, log_alpha, a_opt, c_opt, al_opt, key, state.steps + 1)
        return new, {**c_metrics, **a_metrics, "alpha": jnp.exp(log_alpha)}

    warmup = context.learning_starts if algo.warmup_steps is None else algo.warmup_steps

    def exploration(env_steps: int) -> float:
        """The probability of a uniform action at this process's env steps: 1 in the warm-up, 0 after."""
        return 1.0 if env_steps < warmup else 0.0

    def act(params: Any, obs: jax.Array, key: jax.Array, uniform_prob: Any) -> tuple[jax.Array, jax.Array]:
        """A policy sample per row, or with probability `uniform_prob` (`exploration(env_steps)`) a uniform action
        within the bounds."""
        key, sub, k_uniform = jax.random.split(key, 3)
        mean, log_std = pi(params, obs)
        unit, _ = squashed_sample(mean, log_std, sub)
        draws = jax.random.uniform(k_uniform, (unit.shape[0], action_dim + 1))  # a coin and a uniform action
        unit = jnp.where(draws[:, :1] < uniform_prob, 2.0 * draws[:, 1:] - 1.0, unit)
        return to_env(unit), key

    def inference(params: Any, obs: jax.Array) -> dict[str, jax.Array]:
        """The deterministic policy: `action` (tanh of the mean, scaled to the bounds), `mean` and `log_std`."""
        mean, log_std = pi(params, obs)
        return {"action": to_env(jnp.tanh(mean)), "mean": mean, "log_std": log_std}

    return entropy_explorer(init, update, act, inference, actor_params=lambda state: state.actor,
                            exploration=exploration)
