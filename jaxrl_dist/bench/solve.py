"""`bench solve`: wall seconds from process start (JIT included) to the first evaluation reaching a threshold.

Each seed runs `python -m jaxrl_dist.train` in a fresh process, as a user would, with `eval.target_return` set so
the run stops when solved; the clock starts just before the process is spawned, so imports and compilation count.
`--cache both` (the default) times every seed twice: cold (no compilation cache) and warm (`roles.compile_cache`
filled by one untimed run of the config before).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jaxrl_dist.io import read_metrics

# Stable-Baselines3 / sbx figures measured on the 2-core reference machine (median of 3 seeds, rl-zoo settings).
BASELINES = {"CartPole-v1:dqn": ("sbx DQN", 22.9), "CartPole-v1:ppo": ("SB3 PPO", 8.2),
             "Pendulum-v1:sac": ("sbx SAC", 25.6)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config file to train")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--threshold", type=float, help="eval return that counts as solved (default: the env's)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cache", choices=("cold", "warm", "both"), default="both",
                   help="cold: no compilation cache; warm: JAX's persistent cache, filled by one untimed run first "
                        "(roles.compile_cache); both (default): each seed cold, then warm")


def solve_one(config: str, seed: int, threshold: float, timeout: float, overrides: list[str], root: Path) -> dict:
    """Trains one seed until solved (or the budget ends); returns its figures."""
    exp = f"solve_seed{seed}"
    cmd = [sys.executable, "-m", "jaxrl_dist.train", "--config", config, "--exp-name", exp, "--seed", str(seed),
           "--overwrite", "--quiet", "--set", f"log.root={root}", "--set", f"eval.target_return={threshold}",
           "--set", "log.tensorboard=false"]
    for o in overrides:
        cmd += ["--set", o]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    records = read_metrics(root / exp / "metrics.jsonl")
    evals = [r for r in records if r.get("eval/episode_return") is not None]
    hit = next((r for r in evals if r["eval/episode_return"] >= threshold), None)
    return {
        "seed": seed,
        "solved": hit is not None,
        "wall_s": round(hit["time"] - start, 2) if hit else None,
        "env_steps": hit["env_steps"] if hit else None,
        "process_s": round(end - start, 2),
        "best_eval": max((r["eval/episode_return"] for r in evals), default=None),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxrl_dist.config import load_config

    cfg = load_config(args.config, args.overrides)
    threshold = args.threshold if args.threshold is not None else _default_threshold(cfg.env.id)
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    modes = ("cold", "warm") if args.cache == "both" else (args.cache,)
    baseline = BASELINES.get(f"{cfg.env.id}:{cfg.algo.name}")
    result: dict[str, Any] = {"config": args.config, "env": cfg.env.id, "algo": cfg.algo.name,
                              "threshold": threshold, "baseline": baseline[0] if baseline else None,
                              "baseline_wall_s": baseline[1] if baseline else None}
    with tempfile.TemporaryDirectory(prefix="jaxrl_bench_") as tmp:
        cache = f"roles.compile_cache={Path(tmp) / 'xla_cache'}"
        for mode in modes:
            overrides = list(args.overrides) + ([cache] if mode == "warm" else ["roles.compile_cache=null"])
            if mode == "warm":
                print("  filling the compilation cache (one untimed run)", file=sys.stderr, flush=True)
                solve_one(args.config, seeds[0], threshold, args.timeout, overrides, Path(tmp) / "fill")
            rows = []
            for seed in seeds:
                row = solve_one(args.config, seed, threshold, args.timeout, overrides, Path(tmp) / mode)
                rows.append(row)
                shown = f"{row['wall_s']:.1f} s at {row['env_steps']} env steps" if row["solved"] else "not solved"
                print(f"  {mode} seed {seed}: {shown} (best eval {row['best_eval']})", file=sys.stderr, flush=True)
            result[mode] = _summary(rows, baseline)
    first = result[modes[0]]  # the figures of earlier versions: the first mode's
    return {**result, "seeds": first["seeds"], "median_wall_s": first["median_wall_s"],
            "speedup_vs_baseline": first["speedup_vs_baseline"]}


def _summary(rows: list[dict[str, Any]], baseline: tuple[str, float] | None) -> dict[str, Any]:
    """The median over seeds (None unless every seed solved), the slowest seed's ratio to it, the speed-up."""
    times = [r["wall_s"] for r in rows if r["solved"]]
    median = statistics.median(times) if len(times) == len(rows) else None
    return {"seeds": rows, "median_wall_s": median,
            "slowest_over_median": round(max(times) / median, 2) if median else None,
            "speedup_vs_baseline": round(baseline[1] / median, 2) if baseline and median else None}


def render(result: dict[str, Any]) -> str:
    lines = [f"bench solve  {result['config']}  ({result['env']}, {result['algo']}, threshold {result['threshold']:g})",
             f"{'cache':>6} {'seed':>6} {'solved':>7} {'wall_s':>8} {'env_steps':>10} {'best_eval':>10}"]
    modes = [m for m in ("cold", "warm") if m in result]
    for mode in modes:
        for r in result[mode]["seeds"]:
            wall = f"{r['wall_s']:.1f}" if r["wall_s"] is not None else "-"
            steps = str(r["env_steps"]) if r["env_steps"] is not None else "-"
            best = f"{r['best_eval']:.1f}" if r["best_eval"] is not None else "-"
            lines.append(f"{mode:>6} {r['seed']:>6} {str(r['solved']):>7} {wall:>8} {steps:>10} {best:>10}")
    for mode in modes:
        s = result[mode]
        if s["median_wall_s"] is None:
            lines.append(f"{mode}: not every seed solved")
            continue
        line = f"{mode}: median wall to solve {s['median_wall_s']:.1f} s, slowest seed x{s['slowest_over_median']}"
        if result["baseline"]:
            line += f"; {result['baseline']} {result['baseline_wall_s']} s -> speed-up x{s['speedup_vs_baseline']}"
        lines.append(line)
    return "\n".join(lines)


def _default_threshold(env_id: str) -> float:
    known = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}
    if env_id in known:
        return known[env_id]
    raise SystemExit(f"error: no default threshold for env {env_id!r}; pass --threshold")
