"""The run's plan: every size that follows from the config and every rule that ties its sections together, in one
place, computed once per run and handed to whatever needs a number.

`plan(cfg)` checks what the config alone decides (loading a config calls it, so a bad combination fails before
anything runs). `plan(cfg, spec, peers)` is the run's plan: it adds the rules between the config and the env (torso
and observation shape, frame storage, prioritized replay, the algorithm's action kinds) and this process's share of
the run when several processes train together. Device names are resolved in `jaxrl_dist.distributed.devices`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import TYPE_CHECKING, Any, Literal

from jaxrl_dist.config.schema import Config
from jaxrl_dist.errors import ConfigError, UserError

if TYPE_CHECKING:
    from jaxrl_dist.envs.spec import EnvSpec

# Seeds of the training envs are `train.seed * 10_007 + env_steps + i`; evaluation envs start this far above, so the
# two never share an instance seed unless eval.env_seed says so.
EVAL_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class Plan:
    """The numbers of one run (or of one process's share of it), never set by hand.

    Attributes:
        data: the data path of the algorithm's definition: "replay" (host replay, sampler) or "segments"
            (on-policy segments straight to the learner).
        actors: actor threads of this process (1 in serial mode; else `roles.actor.count` per actor device).
        learner_devices: devices of this process's part of the learner mesh (each takes its share of a batch).
        env_batch: envs per recv() of one actor.
        env_threads: EnvPool worker threads per actor.
        updates_per_call: K, updates fused into one learner call (1 for segments: one update per segment).
        eval_envs: one env per evaluation episode, stepped side by side.
        eval_threads: EnvPool threads of the evaluation envs (`eval_threads`).
        eval_seed: eval env i is seeded with eval_seed + i, in every evaluation (and in offline `evaluate`).
        mesh_processes: processes of one `jax.distributed` learner mesh (1 without one).
        env_step_budget: this process's share of `train.total_env_steps` (a group's share with MPI groups, a
            process's with a multi-process mesh; all of it otherwise).
        total_updates: learner updates this process makes in the run (with several learner processes or groups,
            each makes them); PPO anneals its learning rate over them.
        capacity_per_actor: replay slots of one actor's partition (replay path).
        write_margin: most transitions one actor may write in one add, n-step flushes included (replay path).
        ratio_slack: env steps an actor may run ahead of the replay ratio (replay path).
        beta_steps: env steps over which prioritized replay anneals beta (replay path).
        batch: transitions this process feeds into each update (its share of `replay.batch_size`).
        ratio: learner updates per env step of this process.
        fill: this process's env steps before the first update: its share of `train.learning_starts` plus the
            steps n-step windows hold back (each env keeps up to n - 1 until its window fills).
        n_step, gamma: n-step returns written into the replay (replay path).
        segment_length: T, env steps per env of one segment (segments path).
    """

    data: Literal["replay", "segments"]
    actors: int
    learner_devices: int
    env_batch: int
    env_threads: int
    updates_per_call: int
    eval_envs: int
    eval_threads: int
    eval_seed: int
    mesh_processes: int
    env_step_budget: int
    total_updates: int
    capacity_per_actor: int = 0
    write_margin: int = 0
    ratio_slack: int = 0
    beta_steps: int = 0
    batch: int = 0
    ratio: float = 0.0
    fill: int = 0
    n_step: int = 1
    gamma: float = 0.99
    segment_length: int = 0


def plan(cfg: Config, spec: EnvSpec | None = None, peers: Any = None, devices: Any = None) -> Plan:
    """The run's plan; raises `ConfigError` naming the keys that do not fit.

    Args:
        cfg: the config.
        spec: the env's spec: adds the rules between the config and the env (None: the config alone).
        peers: this process's MPI group or `jax.distributed` processes (`jaxrl_dist.distributed.peers.Peers`), or
            None. A multi-process mesh splits env steps, `learning_starts` and every batch between its processes.
        devices: the resolved devices (`jaxrl_dist.distributed.devices.Devices`); None: the counts the config names
            (`auto`: one device each).
    """
    from jaxrl_dist.algos import resolve_algorithm

    try:
        data = resolve_algorithm(cfg.algo.name).data
    except UserError as e:
        raise ConfigError(str(e)) from None
    env, roles, train = cfg.env, cfg.roles, cfg.train
    env_batch = env.batch_size or env.num_envs
    _check_common(cfg, env_batch)
    threads = env.num_threads or max(1, min(os.cpu_count() or 1, env.num_envs))
    processes = getattr(peers, "mesh_processes", 1)
    budget = -(-train.total_env_steps // (roles.groups.count * processes))
    actor_devices, learner_devices = _device_counts(cfg, devices, processes)
    actors = roles.actor.count * actor_devices if roles.mode == "async" else 1
    common = dict(env_batch=env_batch, env_threads=threads, eval_envs=cfg.eval.episodes,
                  eval_threads=eval_threads(cfg, busy=actors * (threads + 1) + 1), eval_seed=eval_seed(cfg),
                  mesh_processes=processes, env_step_budget=budget, actors=actors, learner_devices=learner_devices)
    if data == "segments":
        length = int(getattr(cfg.algo, "segment_length"))  # a segments algorithm's config has it (AlgorithmDef)
        result = Plan(data="segments", updates_per_call=1, segment_length=length,
                      total_updates=-(-budget // (length * env.num_envs)), **common)
        _check_segments(cfg, learner_devices)
    else:
        result = _replay_plan(cfg, common, processes)
    if spec is not None:
        check_fit(cfg, spec, result)
    return result


def eval_threads(cfg: Config, busy: int = 0, episodes: int | None = None) -> int:
    """EnvPool threads of the evaluation envs: `eval.num_threads`, or the cores that `busy` threads of the run (the
    training envs', the actors', the learner's) leave free, between 1 and one per episode (`episodes`, default
    `eval.episodes`).

    During training an evaluation shares the machine with them: each step of its envs waits for every one of its
    EnvPool threads to be scheduled, so on a busy machine one thread finishes sooner than several (on 2 cores, PPO
    on CartPole solved in a median of 5.8-6.0 s with one, 7.1-7.8 s with two) and takes less from the training.
    An evaluation on its own (`python -m jaxrl_dist.evaluate`, `busy` 0) gets one per core.
    """
    free = (os.cpu_count() or 1) - busy
    return cfg.eval.num_threads or max(1, min(episodes or cfg.eval.episodes, free))


def _device_counts(cfg: Config, devices: Any, processes: int) -> tuple[int, int]:
    """(actor devices, this process's learner devices): resolved, or as many as the config names."""
    if devices is not None:
        return len(devices.actor), len(devices.learner) // processes
    counts = []
    for key, value in (("roles.actor.devices", cfg.roles.actor.devices),
                       ("roles.learner.devices", cfg.roles.learner.devices)):
        if isinstance(value, str) and value != "auto" and not _DEVICE_NAME.fullmatch(value):
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; allowed: auto, a count, a device "
                              f"name (cpu, cpu:N, gpu:N, auto:N) or a list of names")
        if isinstance(value, tuple) and not value:
            raise ConfigError(f"config key '{key}': an empty list names no device; allowed: auto, a count, names")
        if isinstance(value, tuple):
            bad = [v for v in value if not _DEVICE_NAME.fullmatch(v)]
            if bad:
                raise ConfigError(f"config key '{key}': {bad[0]!r} is not a device name; allowed: cpu, cpu:N, gpu:N, "
                                  f"auto:N")
        counts.append(1 if value == "auto" else (value if isinstance(value, int) else
                                                 1 if isinstance(value, str) else len(value)))
    return counts[0], counts[1]


_DEVICE_NAME = re.compile(r"[a-z]+(:\d+)?")


def _check_common(cfg: Config, env_batch: int) -> None:
    """Rules every run follows, whatever its data path."""
    env, roles = cfg.env, cfg.roles
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
    check = getattr(cfg.algo, "check", None)  # an algorithm config's rules between its own fields
    if callable(check):
        check()
    if cfg.network.torso == "nature_cnn" and not cfg.network.hidden:
        raise ConfigError("config key 'network.hidden': the nature_cnn torso needs at least one hidden layer size")


def _replay_plan(cfg: Config, common: dict[str, Any], processes: int) -> Plan:
    """The sizes of a replay run, and its rules (capacity, learning start, batch split, staleness, groups)."""
    env, roles, train, replay = cfg.env, cfg.roles, cfg.train, cfg.replay
    actors, env_batch, budget = common["actors"], common["env_batch"], common["env_step_budget"]
    algo: Any = cfg.algo  # a replay algorithm's config has gamma and n_step (checked by resolve_algorithm)
    n_step = algo.n_step
    capacity = replay.capacity // actors
    write_margin = env_batch * n_step
    if capacity < 4 * write_margin + replay.batch_size:
        need = actors * (4 * write_margin + replay.batch_size)
        raise ConfigError(
            f"config key 'replay.capacity': value {replay.capacity} is too small for {actors} actor(s) writing "
            f"batches of {write_margin} transitions; allowed: >= {need}"
        )
    if train.learning_starts < replay.batch_size:
        raise ConfigError(
            f"config key 'train.learning_starts': value {train.learning_starts} is below replay.batch_size="
            f"{replay.batch_size}; allowed: >= {replay.batch_size}"
        )
    if train.learning_starts >= train.total_env_steps:
        raise ConfigError(
            f"config key 'train.learning_starts': value {train.learning_starts} leaves no training before "
            f"train.total_env_steps={train.total_env_steps}; allowed: < {train.total_env_steps}"
        )
    k = roles.learner.updates_per_call
    shards = common["learner_devices"] * processes
    if replay.batch_size % shards:
        where = f"{processes} processes x " if processes > 1 else ""
        raise ConfigError(
            f"config key 'replay.batch_size': value {replay.batch_size} does not split over {where}"
            f"{common['learner_devices']} learner devices (roles.learner.devices); allowed: a multiple of {shards}"
        )
    if roles.mode == "async" and train.max_staleness < k:
        raise ConfigError(
            f"config key 'train.max_staleness': value {train.max_staleness} is below roles.learner.updates_per_call"
            f"={k}: parameters are published once per call; allowed: >= {k}"
        )
    groups = roles.groups
    if groups.count > 1 and groups.sync == "params" and groups.interval % k:
        raise ConfigError(
            f"config key 'roles.groups.interval': value {groups.interval} is not a multiple of "
            f"roles.learner.updates_per_call={k} (parameters are averaged between learner calls); allowed: a "
            f"multiple of {k}"
        )
    if (groups.count > 1 or processes > 1) and train.learning_starts >= budget:
        who = f"{groups.count} groups" if groups.count > 1 else f"{processes} processes"
        raise ConfigError(
            f"config key 'train.learning_starts': value {train.learning_starts} leaves no training in a share of "
            f"train.total_env_steps ({budget} env steps each for {who}); allowed: < {budget}"
        )
    learning_starts = -(-train.learning_starts // processes)
    ratio = train.replay_ratio * processes
    # Actors may run ahead of the ratio by `slack` env steps. It must cover one learner call (k updates need
    # k / ratio env steps) plus an env batch per actor, or actors and learner would wait on each other forever.
    needed = math.ceil(k / train.replay_ratio) + env_batch * actors
    if train.ratio_slack and train.ratio_slack < needed:
        raise ConfigError(
            f"config key 'train.ratio_slack': value {train.ratio_slack} cannot cover one learner call of {k} updates "
            f"at replay_ratio {train.replay_ratio}; allowed: 0 (auto) or >= {needed}"
        )
    fill = learning_starts + (n_step - 1) * env.num_envs * actors
    return Plan(
        data="replay", updates_per_call=k, capacity_per_actor=capacity, write_margin=write_margin,
        ratio_slack=train.ratio_slack or needed + 3 * env_batch * actors,
        beta_steps=replay.beta_steps or train.total_env_steps, batch=replay.batch_size // processes, ratio=ratio,
        fill=fill, n_step=n_step, gamma=algo.gamma, total_updates=int(ratio * max(0, budget - fill)) // k * k,
        **common,
    )


def _check_segments(cfg: Config, shards: int) -> None:
    """Rules of an on-policy run: every recv returns all envs, each segment is one learner update split along envs
    over the learner devices; the replay keys do not apply."""
    env = cfg.env
    if env.batch_size not in (0, env.num_envs):
        raise ConfigError(
            f"config key 'env.batch_size': value {env.batch_size} with an on-policy algorithm ({cfg.algo.name}); "
            f"segments step all envs together (allowed: 0 or {env.num_envs})"
        )
    if env.num_envs % shards:
        raise ConfigError(
            f"config key 'env.num_envs': value {env.num_envs} does not split over {shards} learner devices "
            f"(roles.learner.devices; segments are split along envs); allowed: a multiple of {shards}"
        )
    if cfg.checkpoint.save_replay:
        raise ConfigError(f"config key 'checkpoint.save_replay': {cfg.algo.name} has no replay; allowed: false")
    for key in ("frame_dedup", "prioritized"):
        if getattr(cfg.replay, key):
            raise ConfigError(f"config key 'replay.{key}': algorithm {cfg.algo.name} has no replay; allowed: false")
    if cfg.train.max_staleness > 1:  # the default (64) is for replay algorithms
        raise ConfigError(
            f"config key 'train.max_staleness': value {cfg.train.max_staleness} with the on-policy {cfg.algo.name}; "
            f"allowed: 0 (synchronous) or 1 (the actor collects segment k+1 while the learner trains on k)"
        )


def check_fit(cfg: Config, spec: EnvSpec, plan: Plan) -> None:
    """Raises `ConfigError` where the config cannot work with the env: the torso and observation normalisation,
    frame storage and prioritized replay, and the algorithm itself (its action kinds, a user's `make` that returns
    something unusable; the prioritized check traces the update abstractly, nothing runs)."""
    import numpy as np

    if cfg.network.torso == "nature_cnn" and len(spec.obs_shape) != 3:
        raise ConfigError(
            f"config key 'network.torso': nature_cnn needs [C, H, W] frames but env {cfg.env.id} has observations "
            f"of shape {spec.obs_shape}; allowed for it: mlp"
        )
    if cfg.network.torso == "nature_cnn" and not all(_covered(n) for n in spec.obs_shape[1:]):
        sizes = ", ".join(str(n) for n in range(20, 100) if _covered(n))
        raise ConfigError(
            f"config key 'network.torso': nature_cnn's windows (8x8/4, 4x4/2, 3x3/1) do not cover env {cfg.env.id}'s "
            f"{spec.obs_shape[1]}x{spec.obs_shape[2]} frames exactly (they would drop the last rows and columns); "
            f"allowed frame sizes: {sizes}, ..."
        )
    if cfg.network.normalize_obs and not np.issubdtype(np.dtype(spec.obs_dtype), np.floating):
        raise ConfigError(f"config key 'network.normalize_obs': env {cfg.env.id} has {spec.obs_dtype} observations; "
                          f"normalisation is for float vectors (frames are scaled by the nature_cnn torso)")
    r = cfg.replay
    if r.frame_dedup and (len(spec.obs_shape) != 3 or spec.obs_shape[0] < 2 or np.dtype(spec.obs_dtype) != np.uint8):
        raise ConfigError(
            f"config key 'replay.frame_dedup': env {cfg.env.id} has {spec.obs_dtype} observations of shape "
            f"{spec.obs_shape}; frame storage needs uint8 frame stacks [C >= 2, H, W] (allowed here: false)"
        )
    from jaxrl_dist.algos import make_algorithm  # imports the algorithm's JAX code

    algo = make_algorithm(spec, cfg, plan=plan)  # on one device: the check needs no mesh
    if r.prioritized:
        _check_priorities(cfg, spec, algo)


def _covered(size: int) -> bool:
    """Whether the Nature CNN's strided windows cover a frame side of `size` pixels exactly (84 does, 42 does not)."""
    return size >= 36 and (size - 8) % 4 == 0 and ((size - 8) // 4 + 1 - 4) % 2 == 0


def _check_priorities(cfg: Config, spec: EnvSpec, algo: Any) -> None:
    """The algorithm's update answers a `PrioritizedBatch` with `Prioritized(metrics, priority [B])`."""
    import jax

    from jaxrl_dist.records import Prioritized
    from jaxrl_dist.replay.items import zero_samples

    batch = zero_samples(spec, True, (cfg.replay.batch_size,))
    try:
        _, out = jax.eval_shape(algo.update, jax.eval_shape(algo.init, jax.random.PRNGKey(0)), batch)
        shape = getattr(out.priority, "shape", None) if isinstance(out, Prioritized) else type(out).__name__
    except Exception as e:  # noqa: BLE001  # a user's update that cannot take a PrioritizedBatch
        shape = f"an error: {type(e).__name__}: {e}".splitlines()[0]
    if shape != (cfg.replay.batch_size,):
        raise ConfigError(
            f"config key 'replay.prioritized': algorithm {cfg.algo.name} does not return Prioritized(metrics, "
            f"priority [batch]) for a PrioritizedBatch (got {shape}); allowed: false, or an algorithm that supports "
            f"it (dqn)"
        )


def eval_seed(cfg: Config) -> int:
    """The seed of evaluation env 0: `eval.env_seed`, or one derived from `train.seed` when that is null."""
    if cfg.eval.env_seed is not None:
        return cfg.eval.env_seed
    return cfg.train.seed * 10_007 + EVAL_SEED_OFFSET
