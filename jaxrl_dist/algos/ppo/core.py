"""Proximal Policy Optimization (Schulman et al. 2017) as pure functions: GAE advantages, the clipped surrogate,
value clipping, an entropy bonus and minibatch epochs, all inside one jitted update per trajectory segment.

The data is one actor's `Segment` (`jaxrl_dist.algos.base`): rows of observations with the policy's action,
log-probability and value recorded by `act`. Truncated episodes bootstrap from the value of their final observation,
which the actor already computed for that row. Minibatches split the segment's time axis (all envs at `T / M`
shuffled time steps), so that a learner sharded along envs builds the same global minibatches on any device count.

Policies: a categorical over Discrete actions, a product of independent categoricals over MultiDiscrete ones (one
per dimension: log-probabilities and entropies add up), a Gaussian with a state-independent standard deviation over
Box ones. Networks: separate policy and value torsos (the default, as for MLP tasks), or with `algo.shared_trunk` one
torso under both linear heads (CleanRL's Atari agent: a Nature-CNN trunk with its 512-unit dense layer).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxrl_dist.algos.base import Algorithm, BuildContext, Segment, entropy_explorer
from jaxrl_dist.algos.common import per_dimension
from jaxrl_dist.algos.ppo.config import PPOConfig
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.networks import make_torso


class PPOStep(NamedTuple):
    """What `act` records per env row (`[B, ...]`), stored in `Segment.policy`.

    Attributes:
        action: `[B]` int32 (discrete), `[B, D]` int32 (multi-discrete) or `[B, *action_shape]` float32, what the
            env gets (continuous: clipped to the bounds).
        sample: like `action`, but `[B, A]` float32 before clipping for continuous actions (the log-probability is
            that of the sample).
        log_prob: `[B]` float32 log-probability of `sample` under the acting policy.
        value: `[B]` float32 value estimate of the observation.
    """

    action: jax.Array
    sample: jax.Array
    log_prob: jax.Array
    value: jax.Array


class Minibatch(NamedTuple):
    """Time-major training data of one segment, `[T, B, ...]` (or `[T / M, B, ...]` for one minibatch)."""

    obs: jax.Array
    sample: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    ret: jax.Array
    valid: jax.Array  # float32 1 where the row's transition is real (0 on the reset transition after an episode end)


@flax.struct.dataclass
class PPOState:
    params: Any  # the actor-critic's parameters (policy and value torsos and heads)
    opt_state: Any  # of the parameters raveled into one vector (see `make`)
    key: jax.Array  # the PRNG key of the minibatch shuffles (the same on every shard)
    steps: jax.Array  # int32 [], segments trained on


class ActorCritic(nn.Module):
    """`[B, ...]` observations -> `(policy output [B, A], log_std [A] or None, value [B])`.

    A linear policy head and a linear value head, each on its own torso, or both on `policy_torso` when
    `value_torso` is None (a shared trunk). A discrete head gives logits (multi-discrete: each dimension's logits
    one after the other), a continuous one the Gaussian mean with a state-independent log standard deviation.
    """

    policy_torso: nn.Module
    value_torso: nn.Module | None
    out_dim: int
    continuous: bool

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        # Small initial policy outputs (as CleanRL's orthogonal 0.01 head, without the QR decomposition that
        # costs a second of compilation): the first policy is close to uniform.
        small = nn.initializers.variance_scaling(1e-4, "fan_in", "truncated_normal")
        features = self.policy_torso(obs)
        out = nn.Dense(self.out_dim, kernel_init=small)(features)
        value = nn.Dense(1)(features if self.value_torso is None else self.value_torso(obs))[:, 0]
        log_std = self.param("log_std", nn.initializers.zeros, (self.out_dim,)) if self.continuous else None
        return out, log_std, value


def gae(reward: jax.Array, value: jax.Array, terminated: jax.Array, truncated: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Generalized advantage estimates over the rows of a segment.

    Args:
        reward: `[T + 1, B]` reward of the step into each row.
        value: `[T + 1, B]` value of each row's observation (a truncated row's is the bootstrap value).
        terminated: `[T + 1, B]` bool, the row is terminal.
        truncated: `[T + 1, B]` bool, the row ended its episode by a time limit.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        `(advantages, returns, valid)`, each `[T, B]`: the transition from row t to row t + 1 is valid unless row t
        ended an episode (the next row is then the reset); advantages and returns are 0 there.
    """
    chex.assert_equal_shape([reward, value, terminated, truncated])
    chex.assert_rank(reward, 2)
    done = terminated | truncated
    not_term = 1.0 - terminated[1:].astype(jnp.float32)
    delta = reward[1:] + gamma * not_term * value[1:] - value[:-1]
    carry_on = gamma * lam * (1.0 - done[1:].astype(jnp.float32))

    def back(next_adv: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        d, c = x
        adv = d + c * next_adv
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(delta[0]), (delta, carry_on), reverse=True)
    valid = ~done[:-1]
    adv = jnp.where(valid, adv, 0.0)
    returns = jnp.where(valid, adv + value[:-1], 0.0)
    return adv, returns, valid


def make(spec: EnvSpec, algo: PPOConfig, context: BuildContext) -> Algorithm:
    """Builds PPO's pure functions for an env spec, its config section and the build context.

    With `anneal_lr` the learning rate falls linearly to 0 over `context.total_updates` updates (one per segment,
    each `epochs x num_minibatches` optimizer steps): the updates this process's learner really makes, whatever the
    number of actors or groups.
    """
    net_cfg, grad_reduce = context.network, context.grad_reduce
    continuous, multi = spec.action_kind == "continuous", spec.action_kind == "multi_discrete"
    nvec = spec.nvec if multi else (spec.num_actions,)  # the categoricals' sizes (one for a Discrete space)
    out_dim = math.prod(spec.action_shape) if continuous else sum(nvec)
    low = np.asarray(spec.action_low, np.float32).reshape(spec.action_shape) if continuous else None
    high = np.asarray(spec.action_high, np.float32).reshape(spec.action_shape) if continuous else None

    def torso() -> nn.Module:
        return make_torso(net_cfg.torso, net_cfg.hidden, net_cfg.activation, net_cfg.kwargs)

    net = ActorCritic(torso(), None if algo.shared_trunk else torso(), out_dim, continuous)
    epochs, num_mb, seg_len = algo.epochs, algo.num_minibatches, algo.segment_length
    lr: Any = algo.lr
    if algo.anneal_lr:
        lr = optax.linear_schedule(algo.lr, 0.0, max(1, context.total_updates * epochs * num_mb))
    clip = [optax.clip_by_global_norm(algo.max_grad_norm)] if algo.max_grad_norm > 0 else []
    optimizer = optax.chain(*clip, optax.adam(lr, eps=algo.adam_eps))
    obs0 = np.zeros((1, *spec.obs_shape), spec.obs_dtype)

    def logits(out: jax.Array) -> jax.Array:
        """Categorical policy outputs `[B, sum(nvec)]` -> each dimension's logits `[B, D, max(nvec)]` (D = 1 for a
        Discrete space; shorter dimensions padded with logits of probability 0)."""
        return per_dimension(out, nvec)

    def log_prob_entropy(out: jax.Array, log_std: jax.Array | None, sample: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
        """Log-probability `[B]` of `sample` and entropy `[B]` of the policy with outputs `out` `[B, A]`: for
        categoricals, the sums over the independent dimensions."""
        if log_std is None:
            logp_all = jax.nn.log_softmax(logits(out))
            chosen = (sample if multi else sample[:, None]).astype(jnp.int32)  # [B, D]
            logp = jnp.take_along_axis(logp_all, chosen[..., None], axis=-1)[..., 0].sum(axis=-1)
            return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, axis=(-2, -1))
        z = (sample - out) * jnp.exp(-log_std)
        logp = jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)
        entropy = jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e)) * jnp.ones(out.shape[0])
        return logp, entropy

    def init(key: jax.Array) -> PPOState:
        k_net, k_update = jax.random.split(key)
        params = net.init(k_net, obs0)
        return PPOState(params, optimizer.init(ravel_pytree(params)[0]), k_update, jnp.zeros((), jnp.int32))

    def loss_fn(params: Any, mb: Minibatch, count: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The PPO loss of a minibatch `[t, B, ...]`, a masked sum divided by the global valid count `count`
        (so that averaging the shards' gradients gives the gradient of the global minibatch's mean)."""
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), mb)
        out, log_std, value = net.apply(params, flat.obs)  # type: ignore[misc]
        logp, entropy = log_prob_entropy(out, log_std, flat.sample)
        chex.assert_equal_shape([logp, flat.log_prob, value, flat.ret, flat.advantage])
        w = flat.valid
        log_ratio = logp - flat.log_prob
        ratio = jnp.exp(log_ratio)
        adv = flat.advantage
        pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - algo.clip_eps, 1.0 + algo.clip_eps) * adv)
        v_loss = jnp.square(value - flat.ret)
        if algo.value_clip_eps > 0:
            clipped = flat.value + jnp.clip(value - flat.value, -algo.value_clip_eps, algo.value_clip_eps)
            v_loss = jnp.maximum(v_loss, jnp.square(clipped - flat.ret))

        def mean(x: jax.Array) -> jax.Array:
            return jnp.sum(w * x) / count

        pg_loss, value_loss, ent = mean(pg), 0.5 * mean(v_loss), mean(entropy)
        total = pg_loss + algo.vf_coef * value_loss - algo.ent_coef * ent
        metrics = {"policy_loss": pg_loss, "value_loss": value_loss, "entropy": ent,
                   "approx_kl": mean((ratio - 1.0) - log_ratio),
                   "clip_frac": mean((jnp.abs(ratio - 1.0) > algo.clip_eps).astype(jnp.float32))}
        return total, metrics

    def update(state: PPOState, segment: Segment) -> tuple[PPOState, dict[str, jax.Array]]:
        """One segment `[B, T + 1, ...]` (this shard's envs): `epochs` passes of `num_minibatches` steps."""
        chex.assert_rank([segment.reward, segment.terminated, segment.truncated, segment.first], 2)
        tm = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), segment)  # time-major [T + 1, B, ...]
        pol: PPOStep = tm.policy
        chex.assert_shape(tm.reward, (seg_len + 1, None))
        adv, ret, valid = gae(tm.reward, pol.value, tm.terminated, tm.truncated, algo.gamma, algo.gae_lambda)
        data = Minibatch(tm.obs[:-1], pol.sample[:-1], pol.log_prob[:-1], pol.value[:-1], adv, ret,
                         valid.astype(jnp.float32))
        key, sub = jax.random.split(state.key)
        index = None  # one minibatch: every epoch takes the whole segment (no shuffle, no sort to compile)
        if num_mb > 1:
            # The same shuffle on every shard (the key is not folded per shard): minibatch m is the same time
            # steps of every env, on any number of devices.
            perms = jax.vmap(lambda k: jax.random.permutation(k, seg_len))(jax.random.split(sub, epochs))
            index = perms.reshape(epochs * num_mb, seg_len // num_mb)

        def step(carry: tuple[Any, Any], idx: jax.Array | None) -> tuple[tuple[Any, Any], dict[str, jax.Array]]:
            params, opt_state = carry
            mb = data if idx is None else jax.tree.map(lambda x: x[idx], data)
            w = mb.valid
            count, adv_sum = grad_reduce((jnp.sum(w), jnp.sum(w * mb.advantage)))
            count = jnp.maximum(count, 1.0)
            if algo.normalize_advantages:
                mu = adv_sum / count
                var = grad_reduce(jnp.sum(w * jnp.square(mb.advantage - mu))) / count
                mb = mb._replace(advantage=(mb.advantage - mu) / (jnp.sqrt(var) + 1e-8))
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, mb, count)
            # Adam, the norm clip and the cross-shard mean on one raveled vector: a few fused kernels (and one
            # collective) instead of a set per parameter leaf; it cut the update's compile time by 10-30% here, and
            # compilation counts in time-to-solve.
            flat, unravel = ravel_pytree(params)
            updates, opt_state = optimizer.update(grad_reduce(ravel_pytree(grads)[0]), opt_state, flat)
            return (unravel(flat + updates), opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(step, (state.params, state.opt_state), index,
                                                    length=epochs * num_mb)
        metrics = jax.tree.map(jnp.mean, metrics)
        adv_sum, count = grad_reduce((jnp.sum(adv), jnp.sum(valid, dtype=jnp.float32)))
        metrics["advantage_mean"] = adv_sum / jnp.maximum(count, 1.0)  # the metric is a mean over shards
        return PPOState(params, opt_state, key, state.steps + 1), metrics

    def act(params: Any, obs: jax.Array, key: jax.Array, exploration: Any) -> tuple[PPOStep, jax.Array]:
        key, sub = jax.random.split(key)
        out, log_std, value = net.apply(params, obs)  # type: ignore[misc]
        if log_std is None:
            sample = jax.random.categorical(sub, logits(out)).astype(jnp.int32)  # [B, D]
            action = sample = sample if multi else sample[:, 0]
        else:
            sample = out + jnp.exp(log_std) * jax.random.normal(sub, out.shape)
            action = jnp.clip(sample.reshape(sample.shape[0], *spec.action_shape), low, high)
        logp, _ = log_prob_entropy(out, log_std, sample)
        return PPOStep(action, sample, logp, value), key

    def inference(params: Any, obs: jax.Array) -> dict[str, jax.Array]:
        """The deterministic policy: `action` (each dimension's argmax, or the clipped mean), the policy output
        (`logits`: `[B, sum(nvec)]` for multi-discrete actions, the dimensions' logits one after the other) and
        `value`."""
        out, log_std, value = net.apply(params, obs)  # type: ignore[misc]
        if log_std is None:
            action = jnp.argmax(logits(out), axis=-1).astype(jnp.int32)
            return {"action": action if multi else action[:, 0], "logits": out, "value": value}
        action = jnp.clip(out.reshape(out.shape[0], *spec.action_shape), low, high)
        return {"action": action, "mean": out, "value": value}

    return entropy_explorer(init, update, act, inference, actor_params=lambda state: state.params)
