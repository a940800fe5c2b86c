"""DQN / Double DQN as pure functions: `make(spec, config, context)` returns `init`, `update`, `act`, `eval_act`,
`inference`.

Options: dueling head (network.dueling), n-step returns (built by the replay writer, see `Transition`), Huber or MSE
loss, target network refreshed by period or Polyak averaging, prioritized replay (a `PrioritizedBatch` weighs the
per-sample losses, and the update returns each sample's |TD error| with its metrics, as `Prioritized`).

MultiDiscrete actions (`[B, D]`) use action branching (Tavakoli et al. 2018, "Action Branching Architectures for
Deep Reinforcement Learning"): one torso, an independent Q head per dimension (`nvec[d]` values each; a dueling
head shares the state value), each dimension greedy on its own. All dimensions learn towards one target, the reward
plus the discounted *mean* over dimensions of each one's next value, and the loss averages the dimensions' losses:
the paper's best variant (a target per dimension lets every head bootstrap from itself alone; the max over
dimensions overestimates). Exploration is epsilon-greedy per dimension.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_dist.algos.base import Algorithm, BuildContext, Prioritized, PrioritizedBatch, Transition
from jaxrl_dist.algos.common import adam, epsilon_greedy, linear_schedule, per_dimension
from jaxrl_dist.algos.dqn.config import DQNConfig
from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.networks import QHead, make_torso


@flax.struct.dataclass
class DQNState:
    """Learner state of DQN."""

    params: Any
    target_params: Any
    opt_state: Any
    steps: jax.Array  # int32 [], updates done


def td_loss(
    q: jax.Array,
    q_next_target: jax.Array,
    q_next_online: jax.Array,
    batch: Transition | PrioritizedBatch,
    *,
    double: bool,
    kind: str,
) -> tuple[jax.Array, jax.Array]:
    """The DQN temporal-difference loss, for one action or D branched action dimensions.

    Args:
        q: `[B, A]` online values at `batch.obs`, or `[B, D, A]` for D action dimensions (`per_dimension`'s
            padded layout).
        q_next_target: target-network values at `batch.next_obs`, shaped like `q`.
        q_next_online: online values at `batch.next_obs` (Double DQN picks the action with them), like `q`.
        batch: transitions with `action` (`[B]`, or `[B, D]`), `reward [B]` (n-step return) and `discount [B]`;
            a `PrioritizedBatch` also has `weight [B]`, the importance weights of the per-sample losses.
        double: Double DQN target if True, max over the target network if False.
        kind: "huber" (delta 1) or "mse".

    Returns:
        The scalar mean (importance-weighted) loss and the TD errors, `[B]` (or `[B, D]`). With D dimensions,
        every dimension's target is `reward + discount * mean_d next_value_d` and a sample's loss is the mean of
        its dimensions' losses (see the module docstring).
    """
    chex.assert_rank(q, {2, 3})
    chex.assert_equal_shape([q, q_next_target, q_next_online])
    chex.assert_rank(batch.action, q.ndim - 1)
    chex.assert_rank([batch.reward, batch.discount], 1)
    chex.assert_type([batch.reward, batch.discount], jnp.float32)
    branched = q.ndim == 3
    action = batch.action.astype(jnp.int32)
    if not branched:  # one dimension
        q, q_next_target, q_next_online, action = q[:, None], q_next_target[:, None], q_next_online[:, None], \
            action[:, None]
    if double:
        next_action = jnp.argmax(q_next_online, axis=-1)
        next_value = jnp.take_along_axis(q_next_target, next_action[..., None], axis=-1)[..., 0]
    else:
        next_value = q_next_target.max(axis=-1)
    target = jax.lax.stop_gradient(batch.reward + batch.discount * next_value.mean(axis=-1))  # [B]
    q_taken = jnp.take_along_axis(q, action[..., None], axis=-1)[..., 0]  # [B, D]
    td = target[:, None] - q_taken
    per_item = optax.huber_loss(td, delta=1.0) if kind == "huber" else 0.5 * jnp.square(td)
    per_item = per_item.mean(axis=-1)
    if isinstance(batch, PrioritizedBatch):  # corrects the bias of prioritized sampling (Schaul et al. 2016)
        chex.assert_rank(batch.weight, 1)
        per_item = per_item * batch.weight
    return per_item.mean(), td if branched else td[:, 0]


def make(spec: EnvSpec, algo: DQNConfig, context: BuildContext) -> Algorithm:
    """Builds DQN's pure functions for an env spec, its config section and the build context."""
    if spec.action_kind not in ("discrete", "multi_discrete"):
        raise ValueError(f"DQN needs a discrete or multi_discrete action space, got {spec.action_kind}")
    net_cfg, grad_reduce = context.network, context.grad_reduce
    branched = spec.action_kind == "multi_discrete"
    nvec = spec.nvec if branched else (spec.num_actions,)
    net = QHead(make_torso(net_cfg.torso, net_cfg.hidden, net_cfg.activation, net_cfg.kwargs), sum(nvec),
                net_cfg.dueling, spec.nvec)
    sizes = np.asarray(nvec, np.int32) if branched else None
    optimizer = adam(algo.lr, algo.adam_eps, algo.max_grad_norm)
    dummy = np.zeros((1, *spec.obs_shape), spec.obs_dtype)

    def head(params: Any, obs: jax.Array) -> jax.Array:
        """`[B, ...]` observations -> `[B, sum(nvec)]` action values (the dimensions' one after the other)."""
        return net.apply(params, obs)  # type: ignore[return-value]  # apply is typed for mutable collections too

    def shaped(q: jax.Array) -> jax.Array:
        """`head`'s values as `td_loss` takes them: `[B, A]`, or `[B, D, max(nvec)]` per dimension (padded)."""
        return per_dimension(q, nvec) if branched else q

    def init(key: jax.Array) -> DQNState:
        params = net.init(key, dummy)
        return DQNState(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def loss_fn(params: Any, target_params: Any, batch: Transition | PrioritizedBatch
                ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
        # One forward pass of the online net over obs and next_obs together.
        q, q_next_online = jnp.split(head(params, jnp.concatenate([batch.obs, batch.next_obs])), 2)
        q_next_target = head(target_params, batch.next_obs)
        loss, td = td_loss(shaped(q), shaped(q_next_target), shaped(q_next_online), batch, double=algo.double,
                           kind=algo.loss)
        td_abs = jnp.abs(td).mean(axis=-1) if branched else jnp.abs(td)  # a sample's priority: over dimensions
        return loss, ({"loss": loss, "q_mean": q.mean(), "td_abs": td_abs.mean()}, td_abs)

    def update(state: DQNState, batch: Transition | PrioritizedBatch) -> tuple[DQNState, Any]:
        """One step; returns the metrics, or for a `PrioritizedBatch` `Prioritized(metrics, |td| [B])`, the new
        priorities (see jaxrl_dist.replay.prioritized)."""
        grads, (metrics, td_abs) = jax.grad(loss_fn, has_aux=True)(state.params, state.target_params, batch)
        grads = grad_reduce(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        steps = state.steps + 1
        if algo.target_update == "polyak":
            target = optax.incremental_update(params, state.target_params, algo.tau)
        else:
            target = optax.periodic_update(params, state.target_params, steps, algo.target_period)
        out = Prioritized(metrics, td_abs) if isinstance(batch, PrioritizedBatch) else metrics
        return DQNState(params, target, opt_state, steps), out

    def act(params: Any, obs: jax.Array, key: jax.Array, eps: Any) -> tuple[jax.Array, jax.Array]:
        return epsilon_greedy(shaped(head(params, obs)), key, eps, sizes)

    def inference(params: Any, obs: jax.Array) -> dict[str, jax.Array]:
        """The greedy policy: `action` int32 (`[B]`, or `[B, D]`, each dimension's argmax) and the `q_values`
        float32 it maximises (`[B, A]`, or `[B, sum(nvec)]`, the dimensions' values one after the other)."""
        q = head(params, obs)
        action = jnp.argmax(shaped(q), axis=-1).astype(jnp.int32)
        return {"action": action, "q_values": q}

    def eval_act(params: Any, obs: jax.Array) -> jax.Array:
        return inference(params, obs)["action"]

    exploration = linear_schedule(algo.eps_start, algo.eps_end, algo.eps_decay_steps)
    return Algorithm(init, update, act, eval_act, lambda s: s.params, exploration, inference)
