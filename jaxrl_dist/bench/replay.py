"""`bench replay`: host memory per transition and sampling time of the replay layouts, for a config's env.

Two layouts (frame stacks as they come, and each frame stored once, `replay.frame_dedup`) times two samplers
(uniform, prioritized). Memory is per transition slot, rings included, and projected to the config's
`replay.capacity`; it is computed, not allocated, so a 1M-transition projection needs no memory. Sampling time is
one learner call's batches (`K x B` items, stacks rebuilt where frames are stored once) from a partition filled with
`--fill` transitions of the config's env under random actions (real frames, so equal frames are real too).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from jaxrl_dist.config import Config, load_config, plan
from jaxrl_dist.replay.frames import bytes_per_transition
from jaxrl_dist.replay.items import transition_example


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/ddqn_pong.yaml", help="config whose env and replay are used")
    p.add_argument("--fill", type=int, default=4000, help="transitions written before sampling is timed")
    p.add_argument("--calls", type=int, default=20, help="learner calls' worth of batches timed per figure")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _layout(cfg: Config, frames: bool, prioritized: bool, capacity: int) -> Config:
    import dataclasses

    replay = dataclasses.replace(cfg.replay, frame_dedup=frames, prioritized=prioritized, capacity=capacity)
    roles = dataclasses.replace(cfg.roles, mode="serial")  # one partition, blocking feedback: reproducible
    env = dataclasses.replace(cfg.env, batch_size=0)  # serial mode steps all envs together
    return dataclasses.replace(cfg, replay=replay, roles=roles, env=env)


def _fill(cfg: Config, replay: Any, spec: Any, count: int) -> None:
    """Writes `count` transitions from the config's env under random actions, as an actor does."""
    from jaxrl_dist.envs import make_env
    from jaxrl_dist.roles.replay_path import make_nstep_writer

    env = make_env(env_id=cfg.env.id, num_envs=cfg.env.num_envs, batch_size=cfg.env.num_envs, num_threads=1, seed=0,
                   max_episode_steps=cfg.env.max_episode_steps, backend=cfg.env.backend, kwargs=cfg.env.kwargs,
                   wrappers=cfg.env.wrappers)
    part = replay.partitions[0]
    writer = make_nstep_writer(plan(cfg), spec, env.num_envs, part)
    rng = np.random.default_rng(0)
    last = np.zeros((env.num_envs, *spec.obs_shape), spec.obs_dtype)
    actions = np.zeros(env.num_envs, np.int32)
    try:
        env.reset()
        while part.committed < count:
            b = env.recv()
            moved = ~b.first
            sel = b.env_ids[moved]
            if sel.size:
                t = writer.step(sel, last[sel], actions[sel], b.reward[moved], b.obs[moved], b.terminated[moved],
                                b.truncated[moved])
                if t is not None:
                    part.add(t)
            last[b.env_ids] = b.obs
            act = rng.integers(0, max(1, spec.num_actions), len(b.env_ids)).astype(np.int32)
            actions[b.env_ids] = act
            env.send(act, b.env_ids)
    finally:
        env.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(args.config, list(args.overrides))
    from jaxrl_dist.roles.graph import prepare
    from jaxrl_dist.roles.replay_path import make_replay

    spec = prepare(_layout(cfg, False, False, cfg.replay.capacity)).spec
    if spec.action_kind != "discrete":
        raise SystemExit("bench replay fills the replay with random discrete actions; use a discrete-action config")
    sizes = plan(cfg)
    k, batch = sizes.updates_per_call, cfg.replay.batch_size
    example = transition_example(spec)
    rows = []
    for frames in (False, True) if len(spec.obs_shape) == 3 else (False,):
        per = bytes_per_transition(example, cfg.replay.capacity, cfg.env.num_envs, sizes.n_step, sizes.env_batch,
                                   frames)
        for prioritized in (False, True):
            small = _layout(cfg, frames, prioritized, max(args.fill + 8 * sizes.write_margin, 8 * k * batch))
            replay = make_replay(small, plan(small), spec, 1)
            _fill(small, replay, spec, args.fill)
            rng = np.random.default_rng(1)
            replay.sample_stacked(k, batch, rng)  # first call: trees synced, arrays touched
            start = time.perf_counter()
            for _ in range(args.calls):
                replay.sample_stacked(k, batch, rng)
            ms = (time.perf_counter() - start) / args.calls * 1e3
            rows.append({"layout": "frames once" if frames else "stacks", "sampler": "prioritized" if prioritized
                         else "uniform", "bytes_per_transition": round(per, 1),
                         "gb_at_capacity": round(per * cfg.replay.capacity / 1e9, 2), "sample_ms_per_call": round(ms, 2)})
    return {"env": cfg.env.id, "obs_shape": list(spec.obs_shape), "capacity": cfg.replay.capacity,
            "k": k, "batch_size": batch, "fill": args.fill, "rows": rows}


def render(r: dict[str, Any]) -> str:
    lines = [f"bench replay  {r['env']}  obs {r['obs_shape']}  capacity {r['capacity']}  "
             f"one call = {r['k']} x {r['batch_size']} items, from {r['fill']} stored",
             f"{'layout':<13}{'sampler':<13}{'bytes/transition':>18}{'GB at capacity':>16}{'sample ms/call':>16}"]
    for row in r["rows"]:
        lines.append(f"{row['layout']:<13}{row['sampler']:<13}{row['bytes_per_transition']:>18}"
                     f"{row['gb_at_capacity']:>16}{row['sample_ms_per_call']:>16}")
    return "\n".join(lines)
