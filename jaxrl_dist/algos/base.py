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


class PrioritizedBatch(NamedTuple):
    """A `Transition` batch from prioritized replay (`replay.prioritized: true`): the same first five fields, so
    code that reads them by name (and `_replace`) works unchanged, plus what prioritisation needs.

    An algorithm that supports prioritized replay multiplies its per-sample losses by `weight` and returns the
    `[B]` float32 metric `priority`, the `|TD error|` of each sample; the learner hands it back to the replay.

    Attributes:
        obs, action, reward, discount, next_obs: as in `Transition`.
        weight: `[B]` float32 importance-sampling weights, at most 1.
        index: `[B, 2]` int32 (replay partition, sequence number mod 2^31) of each sample; the update ignores it.
    """

    obs: Any
    action: Any
    reward: Any
    discount: Any
    next_obs: Any
    weight: Any
    index: Any


class Segment(NamedTuple):
    """A trajectory segment of one actor, env-major: `B` envs, `T + 1` consecutive env rows each.

    Row `t` is what `recv` gave (the observation and the reward, termination and truncation of the step into it)
    and what `act` returned for it. Row `T` is the bootstrap row; it is row 0 of the actor's next segment. The
    transition `t -> t + 1` is real unless row `t` ended an episode (the env then resets and row `t + 1` is `first`).
    Env-major (`[B, T + 1]`, not `[T + 1, B]`) so that the learner's batch sharding splits it along envs.

    Attributes:
        obs: `[B, T + 1, *obs_shape]` observations.
        reward: `[B, T + 1]` float32 reward of the step into row t (0 where `first`).
        terminated: `[B, T + 1]` bool, row t is a terminal state (no bootstrap).
        truncated: `[B, T + 1]` bool, row t ended the episode by a time limit (its value is bootstrapped).
        first: `[B, T + 1]` bool, row t starts an episode.
        policy: the pytree `act` returned for each row, leaves `[B, T + 1, ...]` (PPO: action, log-prob, value).
    """

    obs: Any
    reward: Any
    terminated: Any
    truncated: Any
    first: Any
    policy: Any


class Algorithm(NamedTuple):
    """The pure functions of one algorithm, closed over its networks and optimizer.

    Attributes:
        init: `key -> state`, the full learner state (a flax.struct.dataclass).
        update: `(state, batch) -> (state, metrics)` for one shard; jit-able; metrics are scalars.
        act: `(params, obs [B, ...], key, eps) -> (actions [B], key)`, the exploring policy of actors (for
            `data="segments"`: `(record, key)`, a pytree with an `action` field, see `AlgorithmDef`).
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
    act: Callable[[Any, jax.Array, jax.Array, Any], tuple[Any, jax.Array]]  # actions, or a record (segments)
    eval_act: Callable[[Any, jax.Array], jax.Array]
    actor_params: Callable[[Any], Any]
    exploration: Callable[[int], float]
    inference: Callable[[Any, jax.Array], dict[str, jax.Array]]


def entropy_explorer(init: Callable[[jax.Array], Any], update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
                     act: Callable[..., tuple[Any, jax.Array]],
                     inference: Callable[[Any, jax.Array], dict[str, jax.Array]],
                     actor_params: Callable[[Any], Any]) -> Algorithm:
    """The `Algorithm` of one whose exploration is its policy's own entropy (SAC, PPO): no exploration schedule, and
    the deterministic policy is `inference`'s action."""
    return Algorithm(init=init, update=update, act=act, eval_act=lambda params, obs: inference(params, obs)["action"],
                     actor_params=actor_params, exploration=lambda env_steps: 0.0, inference=inference)


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
            replay (n-step returns precomputed with `cfg.algo.gamma` and `cfg.algo.n_step` when the config has them);
            with `replay.prioritized`, a `PrioritizedBatch` (the algorithm then weighs its losses and returns a
            `priority` metric, see there);
            or "segments" (on-policy), one actor's `Segment` `[B, T + 1, ...]` per update, with `T` the config's
            `segment_length`. A segments algorithm's `act` returns `(record, key)`: `record` is a pytree with an
            `action` field (what the env gets), all leaves `[B, ...]`, stored in the segment as `Segment.policy`.
        action_kinds: The action spaces it handles: "discrete", "continuous" or both.
    """

    config: type
    make: Callable[..., Algorithm]
    data: Literal["replay", "segments"] = "replay"
    action_kinds: tuple[str, ...] = ("discrete", "continuous")
