"""`bench gpu`: the accelerator check, one JSON object from one command (`scripts/gpu_check.sh` runs it).

On the machine it runs on (meant for one GPU and its host's cores, after the GPU install of docs/gpu.md), in about 8
minutes: raw EnvPool Pong steps/s with every core; the actor pipeline with the policy on the accelerator and on the
CPU, as a share of raw EnvPool; full asynchronous training of `ppo_pong` and `ddqn_pong` (env steps/s and updates/s
once learning runs); the sampler's learner calls per second for Atari batches (B = 256, frames stored once,
prioritized, 1 and 2 threads); and the learner's updates/s at B = 256. `--quick` runs the same plumbing on CartPole
in seconds, to check the script itself on any machine.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from jaxrl_dist.config import Config, load_config

ATARI = "Pong-v5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-seconds", type=float, default=120.0, help="measuring window of each training run")
    p.add_argument("--seconds", type=float, default=15.0, help="measuring window of the other figures")
    p.add_argument("--quick", action="store_true", help="CartPole and short windows: checks the script itself")


def _load(path: str, *sets: str) -> Config:
    over = ["eval.interval=0", "checkpoint.interval=0", "log.tensorboard=false", "log.quiet=true", *sets]
    return load_config(path, over)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from jaxrl_dist.bench import replay, throughput

    cores = os.cpu_count() or 1
    quick = args.quick
    seconds, train_s = (2.0, 3.0) if quick else (args.seconds, args.train_seconds)
    ppo, dqn = ("configs/ppo_cartpole.yaml", "configs/dqn_cartpole.yaml") if quick else (
        "configs/ppo_pong.yaml", "configs/ddqn_pong.yaml")
    envs = [f"env.num_envs={2 * cores}", f"env.batch_size={cores}", f"env.num_threads={cores}"]
    out: dict[str, Any] = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.local_devices()],
                           "cpu_cores": cores, "quick": quick}
    started = time.perf_counter()

    def stamp(name: str, value: Any) -> None:
        out[name] = value
        print(f"bench gpu: {name} = {value} ({time.perf_counter() - started:.0f} s)", flush=True)

    env_id = "CartPole-v1" if quick else ATARI
    stamp("raw_envpool_sps", round(throughput.raw_envpool(_load(dqn, f"env.id={env_id}", *envs), seconds), 1))
    for where, device in (("accelerator", "auto"), ("cpu", "cpu:0")):
        cfg = _load(dqn, *envs, "roles.actor.count=2", f"roles.actor.devices={device}")
        sps = throughput.actor_pipeline(cfg, seconds)
        stamp(f"actor_pipeline_sps_{where}", round(sps, 1))
        stamp(f"actor_pipeline_ratio_{where}", round(sps / max(out["raw_envpool_sps"], 1e-9), 3))
    for name, path in (("ppo_pong", ppo), ("ddqn_pong", dqn)):
        sps, ups = throughput.full_training(_load(path, f"env.num_threads={cores}"), train_s)
        stamp(f"train_{name}_sps", round(sps, 1))
        stamp(f"train_{name}_ups", round(ups, 1))
    cfg = _load(dqn, "replay.batch_size=256", "replay.frame_dedup=true" if not quick else "replay.prioritized=true",
                "replay.prioritized=true")
    spec = _spec(cfg)
    rows = _sampler(cfg, spec, seconds)
    stamp("sampler_calls_per_s", rows)
    calls = replay._learner_calls_per_s(cfg, spec)
    stamp("learner_updates_per_s_b256", round(calls * cfg.roles.learner.updates_per_call, 1))
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def _spec(cfg: Config) -> Any:
    from jaxrl_dist.roles.graph import prepare

    return prepare(cfg).spec


def _sampler(cfg: Config, spec: Any, seconds: float) -> dict[str, float]:
    """The sampler's learner calls per second (gather + device_put) with 1 and 2 threads, from a filled replay."""
    from jaxrl_dist.bench import replay as bench_replay
    from jaxrl_dist.config import plan
    from jaxrl_dist.roles.replay_path import make_replay

    k, batch = cfg.roles.learner.updates_per_call, cfg.replay.batch_size
    small = bench_replay._layout(cfg, cfg.replay.frame_dedup, True, 8 * k * batch + 64 * cfg.env.num_envs)
    buffer = make_replay(small, plan(small), spec, 1)
    bench_replay._fill(small, buffer, spec, 4000)
    calls = max(4, int(seconds * 4))
    return {f"{t}_threads": round(bench_replay._calls_per_s(buffer, k, batch, spec, True, t, calls)[1], 1)
            for t in (1, 2)}


def render(r: dict[str, Any]) -> str:
    return "\n".join(f"{k:<32} {v}" for k, v in r.items())
