"""Algorithm transforms the config switches on for any algorithm, built-in or a user's: observation normalisation
and reward scaling. Each takes an `Algorithm` and returns one, pure functions still.

Observation normalisation lives in the learner state, not in the envs: the running statistics are updated by the
learner from the batches it trains on (reduced across shards with the same injected `grad_reduce` as the
gradients), travel to the actors and the evaluator inside the actor parameters, are saved in checkpoints with the
rest of the state, and are constants of the exported graph, which therefore takes raw observations.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_dist.algos.base import Algorithm, GradReduce, Segment, Transition

OBS_CLIP = 5.0  # normalised observations are clipped to [-5, 5], as in SB3's VecNormalize (clip_obs=10) but tighter
VAR_EPS = 1e-8


@flax.struct.dataclass
class ObsStats:
    """Running moments of observations: `mean`, `var` `[*obs_shape]` float32 and the `count` [] of batches merged."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


@flax.struct.dataclass
class ObsNormState:
    """The wrapped algorithm's learner state and the observation statistics."""

    inner: Any
    obs_stats: ObsStats


def normalize(stats: ObsStats, obs: jax.Array) -> jax.Array:
    """`[B, *obs_shape]` raw observations -> standardised float32, clipped to +-OBS_CLIP."""
    z = (obs.astype(jnp.float32) - stats.mean) / jnp.sqrt(stats.var + VAR_EPS)
    return jnp.clip(z, -OBS_CLIP, OBS_CLIP)


def merge_moments(stats: ObsStats, obs: jax.Array, reduce: GradReduce) -> ObsStats:
    """Adds a batch `[B, *obs_shape]` to the running moments (Chan et al.'s parallel update).

    The batch's mean and second moment are averaged across shards by `reduce`, so every shard keeps identical
    statistics. Batches are all the same size, so `count` counts batches: the update is the same as with sample
    counts (scaling both counts cancels), and it does not depend on how many devices split the batch.
    """
    x = obs.astype(jnp.float32)
    batch_mean, batch_sq = reduce((x.mean(axis=0), jnp.square(x).mean(axis=0)))
    batch_var = jnp.maximum(batch_sq - jnp.square(batch_mean), 0.0)
    n = jnp.float32(1.0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    var = (stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / total) / total
    return ObsStats(mean, var, total)


def with_obs_norm(algo: Algorithm, obs_shape: tuple[int, ...], grad_reduce: GradReduce) -> Algorithm:
    """`algo` fed standardised observations; the statistics are learnt from the batches it trains on.

    The actor parameters become `(inner actor params, ObsStats)`, so acting, evaluation and export normalise with
    the statistics of the learner state they came from.

    Which statistics normalise a batch:

    - A replay batch (`Transition`) is merged first and normalised with the statistics that include it: off-policy
      learning does not need the observations as the actor saw them, and the newest estimate is the best one.
    - An on-policy `Segment` is normalised with the statistics of the state *before* it is merged, which are the
      ones its actor acted with, so that the policy the update starts from is the one that recorded the segment's
      log-probabilities and values (PPO's first ratio is 1); the segment is merged afterwards, for the next
      update. This is exact in synchronous mode (`train.max_staleness: 0`), where the actor acts with the learner's
      current state. With `max_staleness: 1` the actor collected segment s + 1 with the state after s updates while
      the learner trains on it from the state after s + 1: the statistics then lag by one segment's merge, exactly
      as the parameters lag by one update, and PPO's clipping treats both alike as a slightly off-policy segment.
    """

    def init(key: jax.Array) -> ObsNormState:
        zeros = jnp.zeros(obs_shape, jnp.float32)
        return ObsNormState(algo.init(key), ObsStats(zeros, jnp.ones(obs_shape, jnp.float32), jnp.float32(VAR_EPS)))

    def update(state: ObsNormState, batch: Transition | Segment) -> tuple[ObsNormState, dict[str, jax.Array]]:
        if isinstance(batch, Segment):  # on-policy rows [B, T + 1, ...]: every row is an observation
            stats = merge_moments(state.obs_stats, batch.obs.reshape(-1, *obs_shape), grad_reduce)
            batch = batch._replace(obs=normalize(state.obs_stats, batch.obs))  # as acted (see the docstring)
        else:
            stats = merge_moments(state.obs_stats, batch.obs, grad_reduce)
            batch = batch._replace(obs=normalize(stats, batch.obs), next_obs=normalize(stats, batch.next_obs))
        inner, metrics = algo.update(state.inner, batch)
        return ObsNormState(inner, stats), metrics

    def actor_params(state: ObsNormState) -> tuple[Any, ObsStats]:
        return algo.actor_params(state.inner), state.obs_stats

    return Algorithm(
        init=init,
        update=update,
        act=lambda params, obs, key, eps: algo.act(params[0], normalize(params[1], obs), key, eps),
        eval_act=lambda params, obs: algo.eval_act(params[0], normalize(params[1], obs)),
        actor_params=actor_params,
        exploration=algo.exploration,
        inference=lambda params, obs: algo.inference(params[0], normalize(params[1], obs)),
    )


def with_reward_scale(algo: Algorithm, scale: float) -> Algorithm:
    """`algo` trained on rewards times `scale` (the n-step return is linear in them). Reported episode returns
    stay in the env's units, since the envs are untouched."""

    def update(state: Any, batch: Transition) -> tuple[Any, dict[str, jax.Array]]:
        return algo.update(state, batch._replace(reward=batch.reward * scale))

    return algo._replace(update=update)
