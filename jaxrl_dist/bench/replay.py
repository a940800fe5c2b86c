"""`bench replay`: host memory per transition and the sampler's speed for each replay layout, for a config's env.

Two layouts (frame stacks as they come, and each frame stored once, `replay.frame_dedup`) times two samplers
(uniform, prioritized). Memory is per transition slot, rings included, and projected to the config's
`replay.capacity`; it is computed, not allocated, so a 1M-transition projection needs no memory. Sampling is timed as
the sampler role does it (`jaxrl_dist.roles.sampler.Sampler`): one learner call's batches (`K x B` items, stacks
rebuilt where frames are stored once) gathered (into staging buffers reused call after call on an accelerator), then
`device_put` to the default device, by 1 and by 2 sampler threads (`replay.samplers`), from a partition filled with `--fill` transitions of the config's env under random
actions (real frames, so equal frames are real too). Beside it, the calls per second the config's learner makes on
this device (one fused call timed after compiling; `--no-learner` skips it): the sampler keeps up where its calls
per second exceed the learner's.
"""

from __future__ import annotations

import argparse
import threading
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
    p.add_argument("--threads", default="1,2", help="sampler thread counts to time, comma-separated")
    p.add_argument("--no-learner", action="store_true", help="do not time the config's learner call")
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


def _calls_per_s(replay: Any, k: int, batch: int, spec: Any, prioritized: bool, threads: int, calls: int,
                 ) -> tuple[float, float]:
    """(ms per call of one thread gathering alone, learner calls per second that `threads` sampler roles prepare on
    the default device): the `Sampler` of the replay path, staging buffers where the run would use them."""
    import jax

    from jaxrl_dist.replay.items import zero_samples
    from jaxrl_dist.roles.lifetime import Lifetime, Timers
    from jaxrl_dist.roles.sampler import BatchQueue, Sampler

    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    staged = device.platform != "cpu"  # as `ReplayPath` decides

    def sample(rng: np.random.Generator, out: Any) -> Any:
        return replay.sample_stacked(k, batch, rng, out=out)

    samplers = [Sampler(sample, lambda: True, sharding, BatchQueue(1), Lifetime(), Timers(),
                        np.random.default_rng(10 + i), zero_samples(spec, prioritized, (k, batch)) if staged else None)
                for i in range(threads)]
    for s in samplers:  # first calls: trees synced, buffers touched, transfers set up
        jax.block_until_ready(s.produce())
    start = time.perf_counter()
    for _ in range(calls):
        sample(samplers[0].rng, samplers[0].staging)
    gather_ms = (time.perf_counter() - start) / calls * 1e3

    def work(s: Sampler, n: int) -> None:
        for _ in range(n):
            jax.block_until_ready(s.produce())

    per = max(1, calls // threads)
    workers = [threading.Thread(target=work, args=(s, per)) for s in samplers]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return gather_ms, per * threads / (time.perf_counter() - start)


def _learner_calls_per_s(cfg: Config, spec: Any) -> float:
    """Calls per second of the config's fused learner call on the default device (compiled first, then timed)."""
    import jax

    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.distributed.fused import learner_call
    from jaxrl_dist.replay.items import zero_samples

    k, batch, prioritized = cfg.roles.learner.updates_per_call, cfg.replay.batch_size, cfg.replay.prioritized
    algo = make_algorithm(spec, cfg)
    call = learner_call(algo.update, None, prioritized)
    batches = jax.device_put(zero_samples(spec, prioritized, (k, batch)))
    state = jax.block_until_ready(call(jax.jit(algo.init)(jax.random.PRNGKey(0)), batches).state)
    start, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - start < 2.0:
        state = call(state, batches).state
        jax.block_until_ready(state)
        n += 1
    return n / (time.perf_counter() - start)


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
    thread_counts = [int(t) for t in str(args.threads).split(",") if t]
    rows = []
    for frames in (False, True) if len(spec.obs_shape) == 3 else (False,):
        per = bytes_per_transition(example, cfg.replay.capacity, cfg.env.num_envs, sizes.n_step, sizes.env_batch,
                                   frames)
        for prioritized in (False, True):
            small = _layout(cfg, frames, prioritized, max(args.fill + 8 * sizes.write_margin, 8 * k * batch))
            replay = make_replay(small, plan(small), spec, 1)
            _fill(small, replay, spec, args.fill)
            row: dict[str, Any] = {"layout": "frames once" if frames else "stacks",
                                   "sampler": "prioritized" if prioritized else "uniform",
                                   "bytes_per_transition": round(per, 1),
                                   "gb_at_capacity": round(per * cfg.replay.capacity / 1e9, 2)}
            for threads in thread_counts:
                gather_ms, calls_per_s = _calls_per_s(replay, k, batch, spec, prioritized, threads, args.calls)
                row.setdefault("sample_ms_per_call", round(gather_ms, 2))
                row[f"calls_per_s_{threads}"] = round(calls_per_s, 1)
            rows.append(row)
    learner = None if args.no_learner else round(_learner_calls_per_s(cfg, spec), 2)
    return {"env": cfg.env.id, "obs_shape": list(spec.obs_shape), "capacity": cfg.replay.capacity,
            "k": k, "batch_size": batch, "fill": args.fill, "threads": thread_counts, "rows": rows,
            "learner_calls_per_s": learner}


def render(r: dict[str, Any]) -> str:
    threads = r["threads"]
    lines = [f"bench replay  {r['env']}  obs {r['obs_shape']}  capacity {r['capacity']}  "
             f"one call = {r['k']} x {r['batch_size']} items, from {r['fill']} stored",
             f"{'layout':<13}{'sampler':<13}{'bytes/transition':>18}{'GB at capacity':>16}{'sample ms/call':>16}"
             + "".join(f"{f'calls/s {t} thr':>15}" for t in threads)]
    for row in r["rows"]:
        lines.append(f"{row['layout']:<13}{row['sampler']:<13}{row['bytes_per_transition']:>18}"
                     f"{row['gb_at_capacity']:>16}{row['sample_ms_per_call']:>16}"
                     + "".join(f"{row[f'calls_per_s_{t}']:>15}" for t in threads))
    lines.append("sample ms/call: one thread gathering; calls/s: sampler threads gathering and copying to the device")
    if r["learner_calls_per_s"] is not None:
        lines.append(f"the learner of this config makes {r['learner_calls_per_s']} calls/s on this device "
                     f"({r['learner_calls_per_s'] * r['k']:.1f} updates/s): the sampler keeps up where its calls/s "
                     f"are higher")
    return "\n".join(lines)
