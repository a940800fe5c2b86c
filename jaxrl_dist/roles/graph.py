"""Builds the data-flow graph of one run: envs, algorithm, replay, sampler, learner, actors, evaluator."""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxrl_dist.algos import Algorithm, make_algorithm, resolve_algorithm
from jaxrl_dist.config import Config, Sizes, derive
from jaxrl_dist.distributed import LearnerMesh
from jaxrl_dist.distributed.group_sync import GroupSync
from jaxrl_dist.distributed.groups import Group, GroupMean, Peers
from jaxrl_dist.envs import EnvSpec, VecEnv, make_env
from jaxrl_dist.envs.vector import resolve_backend
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.io.trace import TraceRecorder
from jaxrl_dist.io.video import EpisodeVideo, probe_render, render_kwargs
from jaxrl_dist.replay import ReplayBuffer
from jaxrl_dist.replay import build as replay_build
from jaxrl_dist.replay.build import make_replay, make_writer, zero_samples
from jaxrl_dist.replay.prefetch import Prefetcher
from jaxrl_dist.replay.prioritized import PrioritizedReplay
from jaxrl_dist.roles.actor import Actor
from jaxrl_dist.roles.evaluator import Evaluator
from jaxrl_dist.roles.learner import Learner
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.segments import SegmentFeed, SegmentLimiter, SegmentQueue, segment_arrays
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter

def configure_runtime() -> None:
    """Process-wide JAX settings for the roles.

    On CPU, asynchronous dispatch hands every call to another thread; the actor's tiny policy calls (tens of
    microseconds) run about 40% faster without that hop, and the learner loses nothing since it waits for each
    call's result before publishing anyway.
    """
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def resolve_device(value: str, key: str) -> jax.Device:
    """`auto`, `auto:N`, `cpu`, `cpu:N`, `gpu:N` (any platform name) -> a local JAX device, or a ConfigError listing
    them."""
    return resolve_devices(value, 1, key)[0]


def resolve_devices(value: str, count: int, key: str) -> list[jax.Device]:
    """The device `value` names and the `count - 1` after it on its platform, or a ConfigError listing them."""
    devices = jax.local_devices()
    names = ", ".join(f"{d.platform}:{i}" for i, d in enumerate(devices))
    if value == "auto":
        platform, first = devices[0].platform, 0
    else:
        platform, _, index = value.partition(":")
        if platform == "auto":  # auto:N, the N-th device of the default platform (GPU where there is one)
            platform = devices[0].platform
        try:
            first = int(index or 0)
        except ValueError:
            first = -1
    matching = [d for d in devices if d.platform == platform]
    if not 0 <= first < len(matching):
        fake = ("; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices"
                if platform == "cpu" else "")
        raise ConfigError(f"config key '{key}': device {value!r} is not present; allowed: auto, auto:N, "
                          f"{names}{fake}")
    if first + count > len(matching):
        raise ConfigError(
            f"config key '{key}': {count} devices from {value!r} are not present ({len(matching)} {platform} devices "
            f"here: {names}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices"
        )
    return matching[first:first + count]


@dataclasses.dataclass
class Counters:
    """Where a run starts: zero for a new run, the checkpoint's counters on resume."""

    env_steps: int = 0  # this group's (all of them without groups)
    updates: int = 0
    replay_restored: bool = False
    peer_steps: int = 0  # the other groups' env steps (with groups)


@dataclasses.dataclass
class Graph:
    """The roles of one run, wired together (not yet started)."""

    cfg: Config
    sizes: Sizes
    spec: EnvSpec
    algo: Algorithm
    replay: ReplayBuffer | SegmentQueue  # SegmentQueue for on-policy algorithms (`prefetch` is then the same queue)
    store: ParamStore
    limiter: RatioLimiter
    prefetch: Prefetcher
    learner: Learner
    actors: list[Actor]
    evaluator: Evaluator | None
    sampler_rng: np.random.Generator
    lifetime: Lifetime
    timers: Timers
    placement: LearnerMesh  # the learner devices: `placement.replicated` for state, `placement.batches` for data
    group: Peers | None = None  # this process's MPI group or jax.distributed process (None for a lone process)

    @property
    def lead(self) -> bool:
        """Whether this process writes the experiment directory and evaluates (group 0, or the only process)."""
        return self.group is None or self.group.lead

    def learner_ready(self) -> bool:
        """Whether the learner has data: a replay that holds a batch, or a segment handed over."""
        return self.replay.size() >= (1 if isinstance(self.replay, SegmentQueue) else self.cfg.replay.batch_size)

    def warmup_batches(self) -> Any:
        """Zeros shaped like one learner call's data on the learner devices (to compile before data arrives)."""
        if isinstance(self.replay, SegmentQueue):
            feed = self.actors[0].feed
            assert feed is not None
            zeros = segment_arrays(self.spec, feed.record, feed.num_envs, feed.length, lead=(1,))
            return jax.device_put(zeros, self.placement.batches)
        if self.placement.multiprocess:  # this process's share of the global batch
            assert self.group is not None
            shape = (self.sizes.updates_per_call, self.cfg.replay.batch_size // self.group.count)
            return self.placement.put_batches(zero_samples(self.spec, self.cfg.replay.prioritized, shape))
        return zero_batches(self.spec, self.sizes.updates_per_call, self.cfg.replay.batch_size, self.placement.batches,
                            self.cfg.replay.prioritized)

    def close(self) -> None:
        if any(t.is_alive() for t in self.lifetime.threads):
            return  # a role that did not stop may still be inside its env; process exit releases them
        for actor in self.actors:
            actor.env.close()


def check_fit(cfg: Config, spec: EnvSpec) -> None:
    """Raises `ConfigError` where the network config cannot work with the env (the torso, observation
    normalisation); `make_algorithm` checks the algorithm's fit."""
    if cfg.network.torso == "nature_cnn" and len(spec.obs_shape) != 3:
        raise ConfigError(
            f"config key 'network.torso': nature_cnn needs [C, H, W] frames but env {cfg.env.id} has observations "
            f"of shape {spec.obs_shape}; allowed for it: mlp"
        )
    if cfg.network.normalize_obs and not np.issubdtype(np.dtype(spec.obs_dtype), np.floating):
        raise ConfigError(f"config key 'network.normalize_obs': env {cfg.env.id} has {spec.obs_dtype} observations; "
                          f"normalisation is for float vectors (frames are scaled by the nature_cnn torso)")
    replay_build.check_fit(cfg, spec)  # replay.frame_dedup and replay.prioritized


def preflight(cfg: Config) -> EnvSpec:
    """Checks what the config names before anything is written: devices, the env (one instance), their fit."""
    resolve_device(cfg.roles.actor.device, "roles.actor.device")
    resolve_devices(cfg.roles.learner.device, cfg.roles.learner.num_devices, "roles.learner.device")
    resolve_device(cfg.roles.evaluator.device, "roles.evaluator.device")
    env = make_envs(cfg, derive(cfg), 1, 1, 1, cfg.train.seed)[0]
    try:
        check_fit(cfg, env.spec)
        make_algorithm(env.spec, cfg)  # the action kind, and a user's make() that returns something unusable
        return env.spec
    finally:
        env.close()


def env_args(cfg: Config, sizes: Sizes, num_envs: int, batch: int, seed: int, render: bool = False
             ) -> dict[str, Any]:
    """`make_env` keyword arguments for `num_envs` envs of the config's env (made to render frames if `render`)."""
    e = cfg.env
    kwargs = {**render_kwargs(resolve_backend(e.id, e.backend)), **e.kwargs} if render else dict(e.kwargs)
    return dict(env_id=e.id, num_envs=num_envs, batch_size=batch, num_threads=min(sizes.env_threads, num_envs),
                seed=seed, max_episode_steps=e.max_episode_steps, backend=e.backend, kwargs=kwargs,
                wrappers=e.wrappers)


def make_envs(cfg: Config, sizes: Sizes, count: int, num_envs: int, batch: int, seed: int) -> list[VecEnv]:
    """`count` vectorized envs of `num_envs` each, with disjoint seeds."""
    return [make_env(**env_args(cfg, sizes, num_envs, batch, seed + i * num_envs)) for i in range(count)]


def make_evaluator(cfg: Config, sizes: Sizes, spec: EnvSpec, algo: Algorithm, episodes: int, seed: int,
                   device: str | None = None) -> Evaluator:
    """An evaluator of `episodes` greedy episodes on envs seeded `seed + i`, rebuilt for every evaluation, with
    inference on `device` (default: `roles.evaluator.device`).

    Videos are off; `attach_video` turns them on once the output folder is known.
    """
    key = "roles.evaluator.device" if device is None else "--device"
    jax_device = resolve_device(cfg.roles.evaluator.device if device is None else device, key)
    return Evaluator(lambda render: make_env(**env_args(cfg, sizes, episodes, episodes, seed, render)), spec, algo,
                     jax_device, env_id=cfg.env.id)


def attach_video(evaluator: Evaluator, cfg: Config, sizes: Sizes, video: Callable[[int], EpisodeVideo],
                 warn: Callable[[str], None], seed: int | None = None) -> None:
    """Records env 0's episode of each evaluation with `video` (a `jaxrl_dist.io.video.recorder`), after checking
    in a child process that the env renders (`warn` reports it once if it does not)."""
    args = env_args(cfg, sizes, 1, 1, sizes.eval_seed if seed is None else seed, render=True)
    evaluator.video, evaluator.warn = video, warn
    evaluator.probe = functools.partial(probe_render, args)


def zero_batches(spec: EnvSpec, k: int, batch: int, device: Any, prioritized: bool = False) -> Any:
    """`[k, batch, ...]` zeros shaped like sampled batches (to compile the learner before data arrives); a
    `PrioritizedBatch` with `prioritized`."""
    return jax.device_put(zero_samples(spec, prioritized, (k, batch)), device)


# Env seeds of group g start this far above group 0's, so groups never share an env instance seed.
GROUP_SEED_STRIDE = 100_000_007


def learner_devices(cfg: Config, peers: Peers | None) -> list[jax.Device]:
    """The learner's mesh devices: this process's, or, in a `jax.distributed` run, every process's devices at the
    same local positions (process by process)."""
    mine = resolve_devices(cfg.roles.learner.device, cfg.roles.learner.num_devices, "roles.learner.device")
    if peers is None or isinstance(peers, Group):
        return mine
    platform = mine[0].platform
    local = [d for d in jax.local_devices() if d.platform == platform]
    positions = [local.index(d) for d in mine]
    devices = []
    for p in range(peers.count):
        theirs = sorted((d for d in jax.devices() if d.process_index == p and d.platform == platform),
                        key=lambda d: d.id)
        devices += [theirs[i] for i in positions]
    return devices


class Share(NamedTuple):
    """What one process of the run does (all of the config's numbers for a lone process or an MPI group)."""

    sizes: Sizes  # with `group_env_steps`, this process's env-step budget
    batch: int  # transitions it feeds into each update
    ratio: float  # updates per env step of its own
    learning_starts: int  # its env steps before the first update


def process_share(cfg: Config, sizes: Sizes, peers: Peers | None) -> Share:
    """This process's share of the run. In a `jax.distributed` run of P processes each takes 1/P of the env steps,
    of `learning_starts` and of every global batch, at P times the ratio per own env step, so that the run makes the
    updates a single process would (`replay_ratio` per env step of the whole run) on batches of the same size."""
    batch, ratio = cfg.replay.batch_size, cfg.train.replay_ratio
    if peers is None or isinstance(peers, Group):
        return Share(sizes, batch, ratio, cfg.train.learning_starts)
    share = -(-cfg.train.total_env_steps // peers.count)
    if resolve_algorithm(cfg.algo.name).data == "segments":  # each process feeds its own envs' segments
        return Share(dataclasses.replace(sizes, group_env_steps=share), batch, ratio, cfg.train.learning_starts)
    shards = peers.count * cfg.roles.learner.num_devices
    if batch % shards:
        raise ConfigError(f"config key 'replay.batch_size': value {batch} does not split over {peers.count} "
                          f"processes x roles.learner.num_devices={cfg.roles.learner.num_devices}; allowed: a "
                          f"multiple of {shards}")
    if cfg.train.learning_starts >= share:
        raise ConfigError(f"config key 'train.learning_starts': value {cfg.train.learning_starts} leaves no training "
                          f"in a process's share of train.total_env_steps ({share}); allowed: < {share}")
    return Share(dataclasses.replace(sizes, group_env_steps=share), batch // peers.count, ratio * peers.count,
                 -(-cfg.train.learning_starts // peers.count))


def build_graph(cfg: Config, state: Any = None, keys: Any = None, counters: Counters | None = None,
                group: Peers | None = None) -> Graph:
    """Wires a run's roles. `state` / `keys` / `counters` come from a checkpoint on resume (else fresh); `group`
    is this process's place among MPI groups (`open_group`) or `jax.distributed` processes (`initialize`)."""
    configure_runtime()
    share = process_share(cfg, derive(cfg), group)
    sizes = share.sizes
    counters = counters or Counters()
    serial = cfg.roles.mode == "serial"
    actor_device = resolve_device(cfg.roles.actor.device, "roles.actor.device")
    placement = LearnerMesh.over(learner_devices(cfg, group))
    n_actors = 1 if serial else cfg.roles.actor.count
    seed = cfg.train.seed
    # A resumed run reseeds its envs (their state is not in the checkpoint) so it does not replay old episodes.
    rank = 0 if group is None else group.rank
    env_seed = seed * 10_007 + counters.env_steps + rank * GROUP_SEED_STRIDE
    envs = make_envs(cfg, sizes, n_actors, cfg.env.num_envs, sizes.env_batch, env_seed)
    spec = envs[0].spec
    check_fit(cfg, spec)
    # The learner's update reduces its gradients over its devices, or over the groups (sync: grads).
    reduce = placement.grad_reduce
    if isinstance(group, Group) and cfg.roles.groups.sync == "grads":
        reduce = GroupMean(group, placement.size)
    algo = make_algorithm(spec, cfg, reduce)
    if resolve_algorithm(cfg.algo.name).data == "segments":  # on-policy: segments straight to the learner
        return build_segment_graph(cfg, sizes, spec, algo, envs, state, keys, counters, actor_device, placement,
                                   group)
    root = jax.random.PRNGKey(seed)
    if state is None:
        state = jax.jit(algo.init)(jax.random.fold_in(root, 0))
    state = placement.put_replicated(state)
    if keys is None:
        keys = jax.random.split(jax.random.fold_in(root, 1), n_actors)
    if group is not None:  # every group starts from the same learner state, but explores with its own keys
        keys = jax.vmap(jax.random.fold_in, (0, None))(keys, rank)

    replay = make_replay(cfg, sizes, spec, n_actors)
    store = ParamStore(algo.actor_params(placement.local(state)), counters.updates)
    # Learning starts once the replay holds learning_starts transitions: with n-step returns each env holds back up
    # to n-1 steps until its window fills (or its episode ends), so those steps do not count.
    holdback = (cfg.algo.n_step - 1) * cfg.env.num_envs * n_actors
    start = counters.env_steps + (0 if counters.replay_restored else share.learning_starts + holdback)
    limiter = RatioLimiter(share.ratio, start, sizes.ratio_slack, counters.env_steps, counters.updates,
                           actors=n_actors, peer_steps=counters.peer_steps)
    lifetime, timers = Lifetime(), Timers(TraceRecorder() if cfg.log.profile else None)
    k, batch = sizes.updates_per_call, share.batch
    sync = None
    if group is not None:
        # Every group runs the same number of updates (whatever its env steps overshoot its share), so that
        # every collective is entered as often in every group.
        target = counters.updates + (limiter.updates_at(sizes.group_env_steps) - counters.updates) // k * k
        limiter.max_updates = target
        g = cfg.roles.groups
        mode = g.sync if isinstance(group, Group) else "grads"  # one mesh: every call is a collective
        sync = GroupSync(group, mode, g.interval, target, lifetime.stop_event, limiter, g.overlap, placement)
    sampler_rng = np.random.default_rng([seed, 2] if group is None else [seed, 2, rank])

    def sample() -> Any:  # a Transition, or a PrioritizedBatch whose beta follows the env steps
        return replay.sample_stacked(k, batch, sampler_rng, limiter.env_steps)

    put = placement.put_batches if placement.multiprocess else placement.batches
    prefetch = Prefetcher(sample, lambda: replay.size() >= batch, put, cfg.replay.prefetch, lifetime, timers)
    feedback = replay.feedback if isinstance(replay, PrioritizedReplay) else None
    learner = Learner(algo, state, k, store, limiter, placement, sync, feedback=feedback)
    actors = []
    for i, env in enumerate(envs):
        writer = make_writer(cfg, spec, env.num_envs, replay.partitions[i])
        actors.append(
            Actor(i, env, algo, writer, replay.partitions[i], store, limiter, keys[i], actor_device,
                  cfg.train.max_staleness, deterministic=serial)
        )
    evaluator = None
    if cfg.eval.interval > 0 and rank == 0:  # with groups, group 0 evaluates (all hold the same parameters)
        evaluator = make_evaluator(cfg, sizes, spec, algo, sizes.eval_envs, sizes.eval_seed)
    return Graph(cfg, sizes, spec, algo, replay, store, limiter, prefetch, learner, actors, evaluator,
                 sampler_rng, lifetime, timers, placement, group)


def build_segment_graph(cfg: Config, sizes: Sizes, spec: EnvSpec, algo: Algorithm, envs: list[VecEnv], state: Any,
                        keys: Any, counters: Counters, actor_device: jax.Device, placement: LearnerMesh,
                        group: Peers | None = None) -> Graph:
    """The on-policy wiring (`AlgorithmDef.data == "segments"`): each actor hands fixed-length segments through a
    bounded queue to the learner, one update each (see `jaxrl_dist.roles.segments`); no replay, no sampler.

    The update compiles on a thread from the first moment its shapes are known, while the initial state is
    computed (both take seconds of a time-to-solve); the learner's own first call then finds it compiled.

    With MPI groups or `jax.distributed` processes (`group`), each process feeds its own segments and the learners
    keep in step through `GroupSync`. A group whose actors hand over fewer segments than another's ends the run for
    all at its last one (the stop flag of `GroupSync.leave`), so no group waits for a segment that never comes.
    """
    serial = cfg.roles.mode == "serial"
    root = jax.random.PRNGKey(cfg.train.seed)
    shapes = jax.eval_shape(algo.init, root)
    zero_state = placement.put_replicated(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes))
    limiter = SegmentLimiter(counters.env_steps, counters.updates, actors=len(envs))
    limiter.peer_steps = counters.peer_steps
    store = ParamStore(None, counters.updates)  # the initial parameters are published below
    lifetime, timers = Lifetime(), Timers(TraceRecorder() if cfg.log.profile else None)
    sync = None
    if group is not None:
        mode = cfg.roles.groups.sync if isinstance(group, Group) else "grads"
        sync = GroupSync(group, mode, cfg.roles.groups.interval, 2**62, lifetime.stop_event, limiter,
                         cfg.roles.groups.overlap, placement)
    learner = Learner(algo, zero_state, 1, store, limiter, placement, sync)
    length = cfg.algo.segment_length  # type: ignore[attr-defined]  # a segments algorithm's config has it
    obs = jax.ShapeDtypeStruct((cfg.env.num_envs, *spec.obs_shape), spec.obs_dtype)
    key = jax.ShapeDtypeStruct(root.shape, root.dtype)
    record = jax.eval_shape(algo.act, algo.actor_params(shapes), obs, key, 0.0)[0]  # what act returns per row
    if keys is None:
        keys = jax.random.split(jax.random.fold_in(root, 1), len(envs))
    segments = SegmentQueue(depth=1 if serial else max(1, cfg.replay.prefetch - 1))
    put = placement.put_batches if placement.multiprocess else placement.batches
    actors = []
    for i, env in enumerate(envs):
        feed = SegmentFeed(spec, record, env.num_envs, length, segments, limiter, store, put,
                           cfg.train.max_staleness)
        actors.append(Actor(i, env, algo, None, None, store, limiter, keys[i], actor_device, cfg.train.max_staleness,
                            deterministic=serial, feed=feed))
    # The same jitted functions, called with arguments placed as the roles will place them, so the roles' first
    # calls find them compiled (JAX lets a second caller wait for a compilation in flight). Fire and forget: a
    # failure here is raised again, and reported through the lifetime, by the role's own first call.
    first = actors[0]
    act_args = (jax.device_put(algo.actor_params(placement.local(zero_state)), actor_device),
                np.zeros((cfg.env.num_envs, *spec.obs_shape), spec.obs_dtype), first.key, 0.0)
    calls: list[tuple[str, Callable[[], Any]]] = [("actor", lambda: jax.block_until_ready(first._act(*act_args)))]
    if group is None:  # with groups the update is a collective: only the learner thread may call it
        warm = jax.device_put(segment_arrays(spec, record, cfg.env.num_envs, length, lead=(1,)), placement.batches)
        calls.append(("learner", lambda: learner.warmup(warm)))
    for name, call in calls:
        threading.Thread(target=_quietly, args=(call,), name=f"{name}-precompile", daemon=True).start()
    if state is None:
        state = jax.jit(algo.init)(jax.random.fold_in(root, 0))
    state = placement.put_replicated(state)
    local = placement.local(state)
    learner.state, learner.snapshot = state, (local, counters.updates)
    store.publish(algo.actor_params(local), counters.updates)
    evaluator = None
    if cfg.eval.interval > 0 and (group is None or group.lead):
        evaluator = make_evaluator(cfg, sizes, spec, algo, sizes.eval_envs, sizes.eval_seed)
    return Graph(cfg, sizes, spec, algo, segments, store, limiter, segments, learner, actors, evaluator,
                 np.random.default_rng([cfg.train.seed, 2]), lifetime, timers, placement, group)


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001  # see build_segment_graph: the role's own call reports it
        pass
