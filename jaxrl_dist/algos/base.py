"""The algorithm protocol every algorithm module follows: pure functions over an explicit state.

An algorithm is built once per run by `make(spec, cfg, grad_reduce)` from the env spec and the config, and hands the
system a bundle of pure, jit-able functions. The system (roles/) decides where they run, how batches reach them and
how gradients are reduced across devices; the algorithm never touches threads, devices or files.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple

import jax

GradReduce = Callable[[Any], Any]
"""Reduces a gradient pytree across data-parallel shards (identity on one device); injected by the system."""


def no_reduce(grads: Any) -> Any:
    return grads


def shard_key(grad_reduce: GradReduce, key: jax.Array) -> jax.Array:
    """`key` made unique to this shard of a sharded learner (unchanged on one device).

    An update that samples noise per transition (SAC's policy samples, say) draws it with this key, so that the
    shards of a batch do not repeat each other's noise. A key kept in the state must stay the unfolded one, which is
    the same on every shard.
    """
    fold = getattr(grad_reduce, "fold_in_shard", None)
    return fold(key) if fold is not None else key


class Transition(NamedTuple):
    """A replay batch of n-step transitions; `B` is the batch size.

    Attributes:
        obs: `[B, *obs_shape]` observation at the start of the transition.
        action: `[B]` int32 (discrete) or `[B, *action_shape]` float32 action taken there.
        reward: `[B]` float32 discounted n-step return, sum_k gamma^k r_k.
        discount: `[B]` float32 bootstrap factor: gamma^k after k steps, 0 where the episode terminated (a
            truncation keeps gamma^k: the value of the final observation is bootstrapped).
        next_obs: `[B, *obs_shape]` observation the bootstrap value is taken from.
    """

    obs: Any
    action: Any
    reward: Any
    discount: Any
    next_obs: Any


class Algorithm(NamedTuple):
    """The pure functions of one algorithm, closed over its networks and optimizer.

    Attributes:
        init: `key -> state`, the full learner state (a flax.struct.dataclass).
        update: `(state, batch) -> (state, metrics)` for one shard; jit-able; metrics are scalars.
        act: `(params, obs [B, ...], key, eps) -> (actions [B], key)`, the exploring policy of actors.
        eval_act: `(params, obs [B, ...]) -> actions [B]`, the greedy / deterministic policy.
        inference: `(params, obs [B, ...]) -> {name: [B, ...]}`, the deployable policy: what evaluation and export
            run. Its "action" entry is `eval_act`'s action; the other entries are the algorithm's policy outputs
            (DQN: "q_values" `[B, A]` float32). Observations are raw env observations (uint8 frames included):
            any scaling belongs inside, so that an exported graph takes what the env gives.
        actor_params: `state -> params` the actors and the evaluator need.
        exploration: `env_steps -> float`, the actors' exploration parameter (epsilon for DQN).
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    act: Callable[[Any, jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array]]
    eval_act: Callable[[Any, jax.Array], jax.Array]
    actor_params: Callable[[Any], Any]
    exploration: Callable[[int], float]
    inference: Callable[[Any, jax.Array], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class AlgorithmDef:
    """An algorithm as the system knows it: its config section, its builder and what its learner consumes.

    Built-in algorithms are registered under a short name (`dqn`); a user's is named in the config as
    `algo.name: package.module:NAME`, where `NAME` is an `AlgorithmDef` (see the README, "Extending jaxrl_dist").

    Attributes:
        config: The frozen dataclass of the `algo` config section. It needs a `name: str` field (the config's
            `algo.name`); every other field is a hyperparameter with a default, documented like the built-ins'
            (`jaxrl_dist.config.schema.fld`), and `--set algo.KEY=VALUE` reaches it.
        make: `make(spec, cfg, grad_reduce) -> Algorithm`, the pure functions for an env spec and the whole config
            (`cfg.algo` is an instance of `config`). `update` must reduce its gradients with `grad_reduce` (identity
            on one device, a collective where the system shards the batch).
        data: What the learner feeds `update`: "replay", a `Transition` batch `[B, ...]` sampled from the host
            replay (n-step returns precomputed with `cfg.algo.gamma` and `cfg.algo.n_step` when the config has them).
        action_kinds: The action spaces it handles: "discrete", "continuous" or both.
    """

    config: type
    make: Callable[..., Algorithm]
    data: Literal["replay"] = "replay"
    action_kinds: tuple[str, ...] = ("discrete", "continuous")
