"""Builds the data-flow graph of one run: envs, algorithm, data path, learner, actors, evaluator.

One builder for every algorithm: what differs between off-policy and on-policy learning is the data path
(`jaxrl_dist.roles.datapath`), which the algorithm's definition names and the plan carries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxrl_dist.algos import Algorithm, make_algorithm
from jaxrl_dist.config import Config, Plan, plan
from jaxrl_dist.distributed import LearnerMesh
from jaxrl_dist.distributed.devices import Devices, resolve_device
from jaxrl_dist.distributed.group_sync import GroupSync
from jaxrl_dist.distributed.peers import Peers
from jaxrl_dist.envs import EnvSpec, make_env
from jaxrl_dist.envs.vector import resolve_backend
from jaxrl_dist.io.trace import TraceRecorder
from jaxrl_dist.io.video import EpisodeVideo, probe_render, render_kwargs
from jaxrl_dist.roles.actor import Actor
from jaxrl_dist.roles.datapath import DataPath, PathInputs, make_path
from jaxrl_dist.roles.evaluator import Evaluator
from jaxrl_dist.roles.learner import Learner, Publisher
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sync import Counters, Limiter, ParamStore

# Env seeds of group g start this far above group 0's, so groups never share an env instance seed.
GROUP_SEED_STRIDE = 100_000_007


def configure_runtime(cpu_async_dispatch: bool = True, compile_cache: str | None = None) -> None:
    """Process-wide JAX settings for the roles, which take effect only before JAX creates its CPU client (the first
    use of a device): `prepare` calls this first.

    `cpu_async_dispatch` (`roles.cpu_async_dispatch`): on CPU, asynchronous dispatch returns from a call before its
    computation ends, as a GPU always does, so the learner's Python work (its next dispatch, the hand-off, the
    batch of the next call) overlaps its computation: on 2 cores SAC on Pendulum makes about 1,100 updates/s with
    it and about 800 without. Off, every call computes in the caller's thread (a policy call skips the hop to
    XLA's thread, and a CPU run then shows where a role would wait on another's computation).

    `compile_cache` (`roles.compile_cache`) turns on JAX's persistent compilation cache for every program, however
    quick to compile: JAX decides once, at the process's first compilation, whether it uses a cache, so this runs
    before anything is compiled (`prepare`).
    """
    jax.config.update("jax_cpu_enable_async_dispatch", cpu_async_dispatch)
    if compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(Path(compile_cache).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_once_options() -> dict[str, Any]:
    """`compiler_options` for a program that runs once (the initial state, the start keys): on CPU, XLA's least
    optimising backend and its older fusion emitters (LLVM IR straight from each fusion, not through MLIR), which
    compile it two to four times faster (0.45-0.7 s of a CartPole or Pendulum run's start) while the program itself, run once,
    takes a millisecond longer (a Nature-CNN initial state 30-40 ms longer; its compile is 0.1-0.3 s shorter).
    Programs that run many times keep XLA's defaults: with the older emitters the updates ran 15-40% slower and a
    CNN policy 1.8x slower (docs/benchmarks.md)."""
    if jax.default_backend() != "cpu":
        return {}
    return {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def start_keys(seed: int, actors: int, rank: int | None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The key of the initial learner state and each actor's exploration key, from `train.seed`, in one compiled
    program (separate random ops would compile one program each). Groups (`rank`) start from the same learner
    state but explore with their own keys."""

    def keys() -> tuple[jax.Array, tuple[jax.Array, ...]]:
        root = jax.random.PRNGKey(seed)
        per_actor = jax.random.split(jax.random.fold_in(root, 1), actors)
        if rank is not None:
            per_actor = jax.vmap(jax.random.fold_in, (0, None))(per_actor, rank)
        return jax.random.fold_in(root, 0), tuple(per_actor)

    return jax.jit(keys, compiler_options=run_once_options())()


class Setup(NamedTuple):
    """What a run is built from, checked and resolved once before anything is written: the env's spec (from one
    env instance), the plan (every derived size) and the roles' devices."""

    spec: EnvSpec
    plan: Plan
    devices: Devices


def prepare(cfg: Config, peers: Peers | None = None) -> Setup:
    """Checks what the config names before anything is written: the devices, the env (one instance, closed again)
    and their fit with the config, and computes the run's plan. Raises `ConfigError` / `UserError`."""
    configure_runtime(cfg.roles.cpu_async_dispatch, cfg.roles.compile_cache)  # before JAX makes its devices
    devices = Devices.resolve(cfg, peers)
    env = make_env(**env_args(cfg, 1, 1, cfg.train.seed))
    try:
        spec = env.spec
    finally:
        env.close()
    return Setup(spec, plan(cfg, spec, peers, devices), devices)


@dataclasses.dataclass
class Graph:
    """The roles of one run, wired together (not yet started)."""

    cfg: Config
    plan: Plan
    spec: EnvSpec
    algo: Algorithm
    path: DataPath  # how experience goes from the actors to the learner (replay, or on-policy segments)
    store: ParamStore
    learner: Learner
    actors: list[Actor]
    evaluator: Evaluator | None
    lifetime: Lifetime
    timers: Timers
    placement: LearnerMesh  # the learner devices: `placement.replicated` for state, `placement.batches` for data
    group: Peers | None = None  # this process's MPI group or jax.distributed process (None for a lone process)
    precompiling: list[threading.Thread] = dataclasses.field(default_factory=list)  # see `_precompile`

    @property
    def limiter(self) -> Limiter:
        """The data path's limiter: the run's counters, and how actors and the learner pace each other."""
        return self.path.limiter

    @property
    def lead(self) -> bool:
        """Whether this process writes the experiment directory and evaluates (group 0, or the only process)."""
        return self.group is None or self.group.lead

    def close(self, timeout: float = 120.0) -> None:
        """Closes the envs once the roles stopped, after the precompile threads finished: a thread still inside XLA
        when the interpreter exits aborts the process."""
        for thread in self.precompiling:
            thread.join(timeout)
        if any(t.is_alive() for t in self.lifetime.threads):
            return  # a role that did not stop may still be inside its env; process exit releases them
        for actor in self.actors:
            actor.env.close()


def env_args(cfg: Config, num_envs: int, batch: int, seed: int, render: bool = False, threads: int = 0,
             training: bool = False) -> dict[str, Any]:
    """`make_env` keyword arguments for `num_envs` envs of the config's env (made to render frames if `render`),
    with `threads` EnvPool threads (0: at most one per env). Python envs run in worker processes only for
    `training` envs with `env.vector: subprocess`: evaluation envs are rebuilt for every evaluation, where starting
    workers would cost more than it saves."""
    e = cfg.env
    kwargs = {**render_kwargs(resolve_backend(e.id, e.backend)), **e.kwargs} if render else dict(e.kwargs)
    vector = e.vector if training else "inline"
    return dict(env_id=e.id, num_envs=num_envs, batch_size=batch, num_threads=min(threads or num_envs, num_envs),
                seed=seed, max_episode_steps=e.max_episode_steps, backend=e.backend, kwargs=kwargs,
                wrappers=e.wrappers, vector=vector, workers=e.workers)


def make_evaluator(cfg: Config, spec: EnvSpec, algo: Algorithm, episodes: int, seed: int,
                   device: str | jax.Device, threads: int) -> Evaluator:
    """An evaluator of `episodes` greedy episodes on envs seeded `seed + i`, stepped by `threads` EnvPool threads
    (`jaxrl_dist.config.plan.eval_threads`), rebuilt for every evaluation, with inference on `device` (a device, or
    a name given on the command line: `--device`).

    Videos are off; `attach_video` turns them on once the output folder is known.
    """
    jax_device = resolve_device(device, "--device") if isinstance(device, str) else device
    return Evaluator(lambda render: make_env(**env_args(cfg, episodes, episodes, seed, render, threads)), spec,
                     algo, jax_device, env_id=cfg.env.id)


def attach_video(evaluator: Evaluator, cfg: Config, seed: int, video: Callable[[int], EpisodeVideo],
                 warn: Callable[[str], None]) -> None:
    """Records env 0's episode of each evaluation with `video` (a `jaxrl_dist.io.video.recorder`), after checking
    in a child process that the env renders (`warn` reports it once if it does not)."""
    evaluator.video, evaluator.warn = video, warn
    evaluator.probe = functools.partial(probe_render, env_args(cfg, 1, 1, seed, render=True))


def build_graph(cfg: Config, counters: Counters | None = None, group: Peers | None = None,
                setup: Setup | None = None) -> Graph:
    """Wires a run's roles, with a fresh learner state and fresh actor keys (a resumed run installs its checkpoint's
    afterwards: `jaxrl_dist.roles.resume.restore`).

    Args:
        cfg: the config.
        counters: from a checkpoint on resume (else zeros).
        group: this process's place among MPI groups (`open_group`) or `jax.distributed` processes (`initialize`).
        setup: the run's `prepare(cfg, group)`, computed once by the caller (None: computed here).
    """
    setup = setup or prepare(cfg, group)  # `prepare` configured JAX's runtime first
    plan_, devices = setup.plan, setup.devices
    counters = counters or Counters()
    placement = LearnerMesh.over(devices.learner)
    seed, rank = cfg.train.seed, None if group is None else group.rank
    # A resumed run reseeds its envs (their state is not in the checkpoint) so it does not replay old episodes.
    env_seed = seed * 10_007 + counters.env_steps + (rank or 0) * GROUP_SEED_STRIDE
    envs: list[Any] = []
    with contextlib.ExitStack() as on_error:  # envs (their threads, worker processes) closed if wiring fails
        for i in range(plan_.actors):
            envs.append(make_env(**env_args(cfg, cfg.env.num_envs, plan_.env_batch, env_seed + i * cfg.env.num_envs,
                                            threads=plan_.env_threads, training=True)))
            on_error.callback(envs[-1].close)
        spec = envs[0].spec
        reduce = placement.grad_reduce if group is None else group.grad_reduce(placement, cfg.roles.groups)
        algo = make_algorithm(spec, cfg, reduce, plan_)
        lifetime, timers = Lifetime(), Timers(TraceRecorder() if cfg.log.profile else None)
        path = make_path(PathInputs(cfg, plan_, spec, algo, placement, counters, lifetime, timers, rank))
        sync = None
        if group is not None:
            groups = cfg.roles.groups
            sync = GroupSync(group, group.sync_mode(groups), groups.interval, path.target_updates(counters),
                             lifetime.stop_event, path.limiter, groups.overlap, placement)
        init_key, actor_keys = start_keys(seed, plan_.actors, rank)
        shapes = jax.eval_shape(algo.init, init_key)
        serial = cfg.roles.mode == "serial"
        # Actor i runs on the (i // count)-th actor device; the threads of one device share its parameter copy.
        actor_devices = [devices.actor[i // cfg.roles.actor.count] for i in range(plan_.actors)]
        store = ParamStore(counters.updates)  # the initial parameters are published by `Learner.install`
        publisher = Publisher(store, actor_devices, inline=serial)
        learner = Learner(algo, placement.put_replicated(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)),
                          plan_.updates_per_call, publisher, path.limiter, placement, sync, feedback=path.feedback)
        actors = [Actor(i, env, algo, path.writer(i, env, store), store, path.limiter, actor_keys[i], actor_devices[i],
                        deterministic=serial) for i, env in enumerate(envs)]
        precompiling = _precompile(actors, learner, path, placement, cfg.env.num_envs, spec, group)
        state = jax.jit(algo.init, compiler_options=run_once_options())(init_key)
        learner.install(placement.put_replicated(state), counters.updates)
        evaluator = None
        if cfg.eval.interval > 0 and (group is None or group.lead):  # group 0 evaluates (all hold the same parameters)
            evaluator = make_evaluator(cfg, spec, algo, plan_.eval_envs, plan_.eval_seed, devices.evaluator,
                                       plan_.eval_threads)
        graph = Graph(cfg, plan_, spec, algo, path, store, learner, actors, evaluator, lifetime, timers, placement,
                      group, precompiling)
        on_error.pop_all()  # the graph owns them now
    return graph


def _precompile(actors: list[Actor], learner: Learner, path: DataPath, placement: LearnerMesh, num_envs: int,
                spec: EnvSpec, group: Peers | None) -> list[threading.Thread]:
    """Compiles the actor's policy and the learner's update on threads, with arguments placed as the roles will
    place them, while the initial state is computed and the roles start (compilation takes seconds of a
    time-to-solve); the roles' first calls then find them compiled (JAX lets a second caller wait for a compilation
    in flight). A failure here is raised again, and reported through the lifetime, by the role's own first call;
    `Graph.close` waits for the threads. With groups the update is a collective: only the learner thread may call
    it."""
    calls: list[tuple[str, Callable[[], Any]]] = []
    params = learner.algo.actor_params(placement.local(learner.state))
    obs = np.zeros((num_envs, *spec.obs_shape), spec.obs_dtype)
    for actor in {a.device: a for a in actors}.values():  # one per actor device (a compilation each)
        args = (jax.device_put(params, actor.device), obs, actor.key, 0.0)
        calls.append(("actor", functools.partial(lambda a, args: jax.block_until_ready(a._act(*args)), actor, args)))
    if group is None:
        warm = path.warmup_batches()
        calls.append(("learner", lambda: learner.warmup(warm)))
    threads = [threading.Thread(target=_quietly, args=(call,), name=f"{name}-precompile", daemon=True)
               for name, call in calls]
    for thread in threads:
        thread.start()
    return threads


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001  # see _precompile: the role's own call reports it
        pass
