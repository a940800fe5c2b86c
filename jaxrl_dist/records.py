"""Records that several layers hand each other: replay batches, trajectory segments, learner snapshots.

This module imports nothing but the standard library, so that the numpy replay, the roles and the algorithms can
share these types without pulling in each other (or flax and optax).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Transition(NamedTuple):
    """A replay batch of n-step transitions; `B` is the batch size.

    Attributes:
        obs: `[B, *obs_shape]` observation at the start of the transition.
        action: `[B]` int32 (discrete), `[B, D]` int32 (multi-discrete) or `[B, *action_shape]` float32 (continuous)
            action taken there.
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

    An algorithm that supports prioritized replay multiplies its per-sample losses by `weight` and returns, for
    such a batch, `(state, Prioritized(metrics, priority))` from its update: `priority` is the `[B]` float32
    `|TD error|` of each sample, which the learner hands back to the replay.

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


class Prioritized(NamedTuple):
    """What an update returns in place of its metrics for a `PrioritizedBatch`.

    Attributes:
        metrics: the scalar metrics, as for a plain batch.
        priority: `[B]` float32 `|TD error|` of each sample of the batch (this shard's part on a mesh).
    """

    metrics: dict[str, Any]
    priority: Any


class PriorityFeedback(NamedTuple):
    """New priorities from one learner call, on their way from the learner to the replay's sampler.

    Attributes:
        index: `[K, B, 2]` int32 (partition, sequence number mod 2^31) of the samples, as drawn.
        priority: `[K, B]` float32 `|TD error|` of each (device arrays, possibly still being computed).
    """

    index: Any
    priority: Any


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


class Snapshot(NamedTuple):
    """A learner state with the counters at the moment it was taken: what actors, the evaluator and checkpoints
    read, swapped whole by the learner after every call.

    Attributes:
        env_steps: the run's env steps when it was taken (0 where the reader does not need them).
        updates: learner updates the state has had.
        state: the learner state (this process's copy).
    """

    env_steps: int
    updates: int
    state: Any
