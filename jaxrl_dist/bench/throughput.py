"""`bench throughput`: raw env steps vs the actor pipeline vs full training, at the same env settings.

Three figures in one run, each after a warm-up (JIT compilation is excluded here; `bench solve` includes it):
raw random-action steps/s of the env alone; the actor pipeline (recv, replay write, policy inference, send) with
the learner off; and full asynchronous training (env steps/s and learner updates/s), with their ratios. The raw
figure is EnvPool's own for an EnvPool task; for a Python env (custom, gymnasium) it is measured for both
`env.vector` backends, inline and subprocess (with `env.workers`), side by side, e.g. for the 1 ms step of
`--env jaxrl_dist.envs.fake:SlowEnv`. The pipeline and training figures use the config's `env.vector`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxrl_dist.config import Config, load_config, plan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/dqn_cartpole.yaml", help="config whose algorithm and roles are used")
    p.add_argument("--env", help="env id (default: the config's)")
    p.add_argument("--num-envs", type=int, help="envs per actor (default: the config's)")
    p.add_argument("--batch-size", type=int, help="EnvPool batch size (default: the config's)")
    p.add_argument("--threads", type=int, help="EnvPool threads (default: the config's)")
    p.add_argument("--vector", choices=["inline", "subprocess"], help="Python envs' backend for the pipeline and "
                                                                       "training figures (default: the config's)")
    p.add_argument("--workers", type=int, help="subprocess workers per actor (default: the config's)")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring window per figure")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _config(args: argparse.Namespace) -> Config:
    over = list(args.overrides) + ["roles.mode=async", "eval.interval=0", "checkpoint.interval=0",
                                   "log.tensorboard=false", "log.quiet=true"]
    for flag, key in (("env", "env.id"), ("num_envs", "env.num_envs"), ("batch_size", "env.batch_size"),
                      ("threads", "env.num_threads"), ("vector", "env.vector"), ("workers", "env.workers")):
        if getattr(args, flag) is not None:
            over.append(f"{key}={getattr(args, flag)}")
    return load_config(args.config, over)


def raw_envpool(cfg: Config, seconds: float) -> float:
    """Steps/s of EnvPool itself (async send/recv, random actions drawn ahead of time)."""
    from jaxrl_dist.envs.envpool_vec import import_envpool

    envpool = import_envpool()
    sizes = plan(cfg)
    env = envpool.make(cfg.env.id, env_type="gymnasium", num_envs=cfg.env.num_envs, batch_size=sizes.env_batch,
                       num_threads=sizes.env_threads, seed=0, **cfg.env.kwargs)
    space = env.action_space
    rng = np.random.default_rng(0)
    pool: np.ndarray
    if hasattr(space, "n"):
        pool = rng.integers(0, space.n, size=(64, sizes.env_batch)).astype(np.int32)
    else:
        pool = rng.uniform(space.low, space.high, size=(64, sizes.env_batch, *space.shape))
    env.async_reset()
    steps, i = 0, 0
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        ids = env.recv()[-1]["env_id"]
        env.send(pool[i % 64], ids)
        steps, i = steps + len(ids), i + 1
    env.close()
    return steps / (now - start)


def raw_python(cfg: Config, vector: str, seconds: float) -> float:
    """Steps/s of a Python env alone through `make_env` with `vector` (random actions drawn ahead of time), after
    a warm-up of a fifth of `seconds` (at least 0.5 s)."""
    from jaxrl_dist.envs import make_env

    b = plan(cfg).env_batch
    env = make_env(cfg.env.id, num_envs=cfg.env.num_envs, batch_size=b, seed=0,
                   max_episode_steps=cfg.env.max_episode_steps, backend=cfg.env.backend, kwargs=cfg.env.kwargs,
                   vector=vector, workers=cfg.env.workers)
    try:
        pool = _random_actions(env.spec, b)
        env.reset()
        steps, i, start = 0, 0, None
        warm = time.perf_counter() + max(0.5, seconds / 5)
        while True:
            now = time.perf_counter()
            if start is None and now >= warm:
                steps, start = 0, now
            elif start is not None and now - start >= seconds:
                return steps / (now - start)
            batch = env.recv()
            env.send(pool[i % 64], batch.env_ids)
            steps, i = steps + b, i + 1
    finally:
        env.close()


def _random_actions(spec: Any, b: int) -> np.ndarray:
    """64 batches of random valid actions [64, b, ...] for `spec`."""
    rng = np.random.default_rng(0)
    if spec.action_kind == "discrete":
        return rng.integers(0, spec.num_actions, size=(64, b))
    if spec.action_kind == "continuous":
        low, high = np.array(spec.action_low), np.array(spec.action_high)
        return rng.uniform(low, high, size=(64, b, len(low))).reshape(64, b, *spec.action_shape).astype(np.float32)
    return rng.integers(0, spec.nvec, size=(64, b, len(spec.nvec)))  # multi_discrete


def actor_pipeline(cfg: Config, seconds: float) -> float:
    """Steps/s of the actor role with the policy in the loop, the learner off, replay writes on."""
    from jaxrl_dist.roles.graph import build_graph

    g = build_graph(cfg)
    try:
        stop = threading.Event()
        counts = [0] * len(g.actors)

        def loop(i: int) -> None:
            actor = g.actors[i]
            actor.refresh_params()
            actor.start()
            while not stop.is_set():
                counts[i] += actor.step(g.timers)

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(g.actors))]
        for t in threads:
            t.start()
        time.sleep(min(2.0, seconds))  # warm-up: compilation and the first episodes
        before, start = sum(counts), time.perf_counter()
        time.sleep(seconds)
        steps, elapsed = sum(counts) - before, time.perf_counter() - start
        stop.set()
        for t in threads:
            t.join(10)
        return steps / elapsed
    finally:
        g.close()


def full_training(cfg: Config, seconds: float) -> tuple[float, float]:
    """Env steps/s and updates/s of asynchronous training once the learner runs."""
    from jaxrl_dist.roles.graph import build_graph
    from jaxrl_dist.roles.runner import run_graph

    g = build_graph(cfg)
    figures: dict[str, float] = {}

    def monitor() -> None:
        deadline = time.monotonic() + 120
        while g.limiter.updates == 0 and time.monotonic() < deadline and not g.lifetime.stop_event.is_set():
            time.sleep(0.05)
        time.sleep(1.0)  # the learner's first calls compile
        s0, u0, t0 = g.limiter.env_steps, g.limiter.updates, time.perf_counter()
        time.sleep(seconds)
        dt = time.perf_counter() - t0
        figures["sps"] = (g.limiter.env_steps - s0) / dt
        figures["ups"] = (g.limiter.updates - u0) / dt
        g.lifetime.stop_event.set()

    with tempfile.TemporaryDirectory(prefix="jaxrl_bench_") as tmp:
        threading.Thread(target=monitor, daemon=True).start()
        run_graph(g, Path(tmp), time.time())
    return figures.get("sps", 0.0), figures.get("ups", 0.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxrl_dist.envs.vector import resolve_backend

    cfg = _config(args)
    cfg = _with_budget(cfg)
    sizes = plan(cfg)
    python: dict[str, Any] = {}
    if resolve_backend(cfg.env.id, cfg.env.backend) == "envpool":
        raw = raw_envpool(cfg, args.seconds)
    else:
        inline, sub = raw_python(cfg, "inline", args.seconds), raw_python(cfg, "subprocess", args.seconds)
        raw = sub if cfg.env.vector == "subprocess" else inline
        python = {"raw_inline_sps": round(inline), "raw_subprocess_sps": round(sub),
                  "subprocess_over_inline": round(sub / inline, 3),
                  "workers": min(cfg.env.workers or os.cpu_count() or 1, cfg.env.num_envs)}
    actor = actor_pipeline(cfg, args.seconds)
    sps, ups = full_training(cfg, args.seconds)
    return {
        "env": cfg.env.id,
        "num_envs": cfg.env.num_envs,
        "batch_size": sizes.env_batch,
        "threads": sizes.env_threads,
        "actors": cfg.roles.actor.count,
        "vector": cfg.env.vector,
        **python,
        "raw_sps": round(raw),
        "actor_sps": round(actor),
        "train_sps": round(sps),
        "train_ups": round(ups, 1),
        "actor_over_raw": round(actor / raw, 3),
        "train_over_raw": round(sps / raw, 3),
        "replay_ratio_measured": round(ups / sps, 4) if sps else None,
        "replay_ratio_config": cfg.train.replay_ratio,
    }


def _with_budget(cfg: Config) -> Config:
    """The same config with an env-step budget the measurement never reaches."""
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_env_steps=10**12))


def render(r: dict[str, Any]) -> str:
    if "raw_inline_sps" in r:  # a Python env: both backends' raw figures; ratios to the configured one's
        raw = [f"{'raw env, inline sps':<36}{r['raw_inline_sps']:>12}",
               f"{'raw env, subprocess sps':<36}{r['raw_subprocess_sps']:>12}   {r['workers']} workers, "
               f"{r['subprocess_over_inline']:.2f}x inline"]
        setting = f" vector={r['vector']}"
    else:
        raw, setting = [f"{'raw EnvPool (random actions) sps':<36}{r['raw_sps']:>12}{1.0:>14.3f}"], ""
    return "\n".join([
        f"bench throughput  {r['env']}  num_envs={r['num_envs']} batch_size={r['batch_size']} "
        f"threads={r['threads']} actors={r['actors']}{setting}",
        f"{'figure':<36}{'value':>12}{'ratio to raw':>14}",
        *raw,
        f"{'actor pipeline (learner off) sps':<36}{r['actor_sps']:>12}{r['actor_over_raw']:>14.3f}",
        f"{'full training sps':<36}{r['train_sps']:>12}{r['train_over_raw']:>14.3f}",
        f"{'full training updates/s':<36}{r['train_ups']:>12}",
        f"replay ratio: measured {r['replay_ratio_measured']}, configured {r['replay_ratio_config']}",
    ])
