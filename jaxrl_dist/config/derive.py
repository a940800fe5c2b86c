"""The one place that derives dependent sizes from a `Config` and checks that they fit together."""

from __future__ import annotations

import dataclasses
import math
import os

from jaxrl_dist.config.schema import Config
from jaxrl_dist.errors import ConfigError

# Seeds of the training envs are `train.seed * 10_007 + env_steps + i`; evaluation envs start this far above, so the
# two never share an instance seed unless eval.env_seed says so.
EVAL_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Numbers the roles need that follow from the config (never set by hand)."""

    env_batch: int  # envs per recv() of one actor
    env_threads: int  # EnvPool worker threads per actor
    capacity_per_actor: int  # replay slots of one actor's partition
    write_margin: int  # most transitions one actor may write in one add (n-step flushes included)
    ratio_slack: int  # env steps an actor may run ahead of the replay ratio
    updates_per_call: int
    eval_envs: int  # one env per evaluation episode, stepped side by side
    eval_seed: int  # eval env i is seeded with eval_seed + i, in every evaluation (and in offline `evaluate`)
    group_env_steps: int  # each group's share of train.total_env_steps (all of it without groups)
    beta_steps: int = 0  # env steps over which prioritized replay anneals beta (replay.beta_steps, 0: the budget)


def derive(cfg: Config) -> Sizes:
    """Derives every dependent size; raises `ConfigError` naming the keys that do not fit."""
    env, roles, train = cfg.env, cfg.roles, cfg.train
    env_batch = env.batch_size or env.num_envs
    if env_batch > env.num_envs:
        raise ConfigError(
            f"config key 'env.batch_size': value {env.batch_size} is larger than env.num_envs={env.num_envs}; "
            f"allowed: 0 (= num_envs) to {env.num_envs}"
        )
    if roles.mode == "serial" and env_batch != env.num_envs:
        raise ConfigError(
            f"config key 'env.batch_size': value {env.batch_size} needs async mode; roles.mode=serial steps all "
            f"{env.num_envs} envs together (allowed: 0 or {env.num_envs})"
        )
    threads = env.num_threads or max(1, min(os.cpu_count() or 1, env.num_envs))
    if hasattr(cfg.algo, "segment_length"):  # an on-policy algorithm: segments, no replay (roles/segments.py)
        return derive_segments(cfg, threads)
    actors = roles.actor.count if roles.mode == "async" else 1
    capacity = cfg.replay.capacity // actors
    write_margin = env_batch * cfg.algo.n_step
    if capacity < 4 * write_margin + cfg.replay.batch_size:
        need = actors * (4 * write_margin + cfg.replay.batch_size)
        raise ConfigError(
            f"config key 'replay.capacity': value {cfg.replay.capacity} is too small for {actors} actor(s) writing "
            f"batches of {write_margin} transitions; allowed: >= {need}"
        )
    if train.learning_starts < cfg.replay.batch_size:
        raise ConfigError(
            f"config key 'train.learning_starts': value {train.learning_starts} is below replay.batch_size="
            f"{cfg.replay.batch_size}; allowed: >= {cfg.replay.batch_size}"
        )
    if train.learning_starts >= train.total_env_steps:
        raise ConfigError(
            f"config key 'train.learning_starts': value {train.learning_starts} leaves no training before "
            f"train.total_env_steps={train.total_env_steps}; allowed: < {train.total_env_steps}"
        )
    k = roles.learner.updates_per_call
    shards = roles.learner.num_devices
    if cfg.replay.batch_size % shards:
        raise ConfigError(
            f"config key 'replay.batch_size': value {cfg.replay.batch_size} does not split over "
            f"roles.learner.num_devices={shards}; allowed: a multiple of {shards}"
        )
    if roles.mode == "async" and train.max_staleness < k:
        raise ConfigError(
            f"config key 'train.max_staleness': value {train.max_staleness} is below roles.learner.updates_per_call"
            f"={k}: parameters are published once per call; allowed: >= {k}"
        )
    check_groups(cfg)
    check = getattr(cfg.algo, "check", None)  # an algorithm config's rules between its own fields
    if callable(check):
        check()
    if cfg.network.torso == "nature_cnn" and not cfg.network.hidden:
        raise ConfigError("config key 'network.hidden': the nature_cnn torso needs at least one hidden layer size")
    # Actors may run ahead of the ratio by `slack` env steps. It must cover one learner call (k updates need
    # k / ratio env steps) plus an env batch per actor, or actors and learner would wait on each other forever.
    needed = math.ceil(k / train.replay_ratio) + env_batch * actors
    if train.ratio_slack and train.ratio_slack < needed:
        raise ConfigError(
            f"config key 'train.ratio_slack': value {train.ratio_slack} cannot cover one learner call of {k} updates "
            f"at replay_ratio {train.replay_ratio}; allowed: 0 (auto) or >= {needed}"
        )
    slack = train.ratio_slack or needed + 3 * env_batch * actors
    return Sizes(
        env_batch=env_batch,
        env_threads=threads,
        capacity_per_actor=capacity,
        write_margin=write_margin,
        ratio_slack=slack,
        updates_per_call=k,
        eval_envs=cfg.eval.episodes,
        eval_seed=eval_seed(cfg),
        group_env_steps=-(-train.total_env_steps // roles.groups.count),
        beta_steps=cfg.replay.beta_steps or train.total_env_steps,
    )


def check_groups(cfg: Config) -> None:
    """Rules of `roles.groups` against the other keys; raises ConfigError."""
    groups, learner = cfg.roles.groups, cfg.roles.learner
    if groups.count == 1:
        return
    k = learner.updates_per_call
    if groups.sync == "params" and groups.interval % k:
        raise ConfigError(
            f"config key 'roles.groups.interval': value {groups.interval} is not a multiple of "
            f"roles.learner.updates_per_call={k} (parameters are averaged between learner calls); allowed: a "
            f"multiple of {k}"
        )
    per_group = -(-cfg.train.total_env_steps // groups.count)
    if cfg.train.learning_starts >= per_group:
        raise ConfigError(
            f"config key 'train.learning_starts': value {cfg.train.learning_starts} leaves no training in a group's "
            f"share of train.total_env_steps ({per_group} env steps each for {groups.count} groups); allowed: < "
            f"{per_group}"
        )


def eval_seed(cfg: Config) -> int:
    """The seed of evaluation env 0: `eval.env_seed`, or one derived from `train.seed` when that is null."""
    if cfg.eval.env_seed is not None:
        return cfg.eval.env_seed
    return cfg.train.seed * 10_007 + EVAL_SEED_OFFSET


def validate(cfg: Config) -> None:
    """Raises `ConfigError` if the config's sizes do not fit together."""
    derive(cfg)


def derive_segments(cfg: Config, threads: int) -> Sizes:
    """The sizes of an on-policy run (its config has `segment_length`): every recv returns all envs, each segment
    is one learner update split along envs over the learner devices; the replay keys do not apply."""
    env, roles = cfg.env, cfg.roles
    if env.batch_size not in (0, env.num_envs):
        raise ConfigError(
            f"config key 'env.batch_size': value {env.batch_size} with an on-policy algorithm ({cfg.algo.name}); "
            f"segments step all envs together (allowed: 0 or {env.num_envs})"
        )
    shards = roles.learner.num_devices
    if env.num_envs % shards:
        raise ConfigError(
            f"config key 'env.num_envs': value {env.num_envs} does not split over roles.learner.num_devices={shards} "
            f"(segments are split along envs); allowed: a multiple of {shards}"
        )
    if cfg.checkpoint.save_replay:
        raise ConfigError(f"config key 'checkpoint.save_replay': {cfg.algo.name} has no replay; allowed: false")
    if cfg.train.max_staleness > 1:  # the default (64) is for replay algorithms
        raise ConfigError(
            f"config key 'train.max_staleness': value {cfg.train.max_staleness} with the on-policy {cfg.algo.name}; "
            f"allowed: 0 (synchronous) or 1 (the actor collects segment k+1 while the learner trains on k)"
        )
    check = getattr(cfg.algo, "check", None)
    if callable(check):
        check()
    if cfg.network.torso == "nature_cnn" and not cfg.network.hidden:
        raise ConfigError("config key 'network.hidden': the nature_cnn torso needs at least one hidden layer size")
    return Sizes(env_batch=env.num_envs, env_threads=threads, capacity_per_actor=0, write_margin=0, ratio_slack=0,
                 updates_per_call=1, eval_envs=cfg.eval.episodes, eval_seed=eval_seed(cfg),
                 group_env_steps=-(-cfg.train.total_env_steps // roles.groups.count))
