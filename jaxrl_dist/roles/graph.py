"""Builds the data-flow graph of one run: envs, algorithm, replay, sampler, learner, actors, evaluator."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.algos import Algorithm, Transition, make_algorithm
from jaxrl_dist.config import Config, Sizes, derive
from jaxrl_dist.distributed import LearnerMesh
from jaxrl_dist.envs import EnvSpec, VecEnv, make_env
from jaxrl_dist.envs.vector import resolve_backend
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.io.trace import TraceRecorder
from jaxrl_dist.io.video import EpisodeVideo, probe_render, render_kwargs
from jaxrl_dist.replay import NStepWriter, ReplayBuffer
from jaxrl_dist.replay.prefetch import Prefetcher
from jaxrl_dist.roles.actor import Actor
from jaxrl_dist.roles.evaluator import Evaluator
from jaxrl_dist.roles.learner import Learner
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter

def configure_runtime() -> None:
    """Process-wide JAX settings for the roles.

    On CPU, asynchronous dispatch hands every call to another thread; the actor's tiny policy calls (tens of
    microseconds) run about 40% faster without that hop, and the learner loses nothing since it waits for each
    call's result before publishing anyway.
    """
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def resolve_device(value: str, key: str) -> jax.Device:
    """`auto`, `cpu`, `cpu:N`, `gpu:N` (any platform name) -> a local JAX device, or a ConfigError listing them."""
    return resolve_devices(value, 1, key)[0]


def resolve_devices(value: str, count: int, key: str) -> list[jax.Device]:
    """The device `value` names and the `count - 1` after it on its platform, or a ConfigError listing them."""
    devices = jax.local_devices()
    names = ", ".join(f"{d.platform}:{i}" for i, d in enumerate(devices))
    if value == "auto":
        platform, first = devices[0].platform, 0
    else:
        platform, _, index = value.partition(":")
        try:
            first = int(index or 0)
        except ValueError:
            first = -1
    matching = [d for d in devices if d.platform == platform]
    if not 0 <= first < len(matching):
        raise ConfigError(f"config key '{key}': device {value!r} is not present; allowed: auto, {names}")
    if first + count > len(matching):
        raise ConfigError(
            f"config key '{key}': {count} devices from {value!r} are not present ({len(matching)} {platform} devices "
            f"here: {names}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices"
        )
    return matching[first:first + count]


@dataclasses.dataclass
class Counters:
    """Where a run starts: zero for a new run, the checkpoint's counters on resume."""

    env_steps: int = 0
    updates: int = 0
    replay_restored: bool = False


@dataclasses.dataclass
class Graph:
    """The roles of one run, wired together (not yet started)."""

    cfg: Config
    sizes: Sizes
    spec: EnvSpec
    algo: Algorithm
    replay: ReplayBuffer
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


def transition_example(spec: EnvSpec) -> Transition:
    """One transition of zeros: the shapes and dtypes the replay stores."""
    obs = np.zeros(spec.obs_shape, spec.obs_dtype)
    action_dtype = np.int32 if spec.action_kind == "discrete" else np.float32
    return Transition(obs, np.zeros(spec.action_shape, action_dtype), np.float32(0), np.float32(0), obs)


def zero_batches(spec: EnvSpec, k: int, batch: int, device: Any) -> Transition:
    """`[k, batch, ...]` zeros shaped like sampled batches (to compile the learner before data arrives)."""
    example = transition_example(spec)
    return jax.device_put(Transition(*(np.zeros((k, batch, *np.shape(x)), np.asarray(x).dtype) for x in example)),
                          device)


def build_graph(cfg: Config, state: Any = None, keys: Any = None, counters: Counters | None = None) -> Graph:
    """Wires a run's roles. `state` / `keys` / `counters` come from a checkpoint on resume (else fresh)."""
    configure_runtime()
    sizes = derive(cfg)
    counters = counters or Counters()
    serial = cfg.roles.mode == "serial"
    actor_device = resolve_device(cfg.roles.actor.device, "roles.actor.device")
    placement = LearnerMesh.over(
        resolve_devices(cfg.roles.learner.device, cfg.roles.learner.num_devices, "roles.learner.device")
    )
    n_actors = 1 if serial else cfg.roles.actor.count
    seed = cfg.train.seed
    # A resumed run reseeds its envs (their state is not in the checkpoint) so it does not replay old episodes.
    env_seed = seed * 10_007 + counters.env_steps
    envs = make_envs(cfg, sizes, n_actors, cfg.env.num_envs, sizes.env_batch, env_seed)
    spec = envs[0].spec
    check_fit(cfg, spec)
    algo = make_algorithm(spec, cfg, placement.grad_reduce)  # the learner's update reduces over its devices
    root = jax.random.PRNGKey(seed)
    if state is None:
        state = jax.jit(algo.init)(jax.random.fold_in(root, 0))
    state = jax.device_put(state, placement.replicated)
    if keys is None:
        keys = jax.random.split(jax.random.fold_in(root, 1), n_actors)

    replay = ReplayBuffer(transition_example(spec), n_actors, sizes.capacity_per_actor, sizes.write_margin)
    store = ParamStore(algo.actor_params(state), counters.updates)
    # Learning starts once the replay holds learning_starts transitions: with n-step returns each env holds back up
    # to n-1 steps until its window fills (or its episode ends), so those steps do not count.
    holdback = (cfg.algo.n_step - 1) * cfg.env.num_envs * n_actors
    start = counters.env_steps + (0 if counters.replay_restored else cfg.train.learning_starts + holdback)
    limiter = RatioLimiter(
        cfg.train.replay_ratio, start, sizes.ratio_slack, counters.env_steps, counters.updates, actors=n_actors
    )
    lifetime, timers = Lifetime(), Timers(TraceRecorder() if cfg.log.profile else None)
    sampler_rng = np.random.default_rng([seed, 2])
    k, batch = sizes.updates_per_call, cfg.replay.batch_size

    def sample() -> Transition:
        flat = replay.sample(k * batch, sampler_rng)
        return Transition(*(x.reshape(k, batch, *x.shape[1:]) for x in flat))

    prefetch = Prefetcher(
        sample, lambda: replay.size() >= batch, placement.batches, cfg.replay.prefetch, lifetime, timers
    )
    learner = Learner(algo, state, k, store, limiter, placement)
    gamma, n = cfg.algo.gamma, cfg.algo.n_step
    actors = []
    for i, env in enumerate(envs):
        action_dtype = np.int32 if spec.action_kind == "discrete" else np.float32
        writer = NStepWriter(env.num_envs, n, gamma, spec.obs_shape, spec.obs_dtype, spec.action_shape, action_dtype)
        actors.append(
            Actor(i, env, algo, writer, replay.partitions[i], store, limiter, keys[i], actor_device,
                  cfg.train.max_staleness, deterministic=serial)
        )
    evaluator = None
    if cfg.eval.interval > 0:
        evaluator = make_evaluator(cfg, sizes, spec, algo, sizes.eval_envs, sizes.eval_seed)
    return Graph(cfg, sizes, spec, algo, replay, store, limiter, prefetch, learner, actors, evaluator,
                 sampler_rng, lifetime, timers, placement)
