"""`bench scaling`: learner updates/s on 1, 2, 4, 8 devices, at a fixed batch per device (weak scaling) and at a
fixed global batch (strong scaling), with efficiencies.

The learner call is the one training uses (`jaxrl_dist.distributed.fused_update`: K fused updates, jit +
shard_map over a `data` mesh), fed with batches already on their shards, so the figures are the learner's alone.
On a CPU the devices are faked (`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set here by re-running in a
child process when fewer devices exist) and share the same cores: the figures then show the mechanics, not speed.

Groups: whole training runs under `mpirun -n G` (one process per group, each bound to its own core), with env steps/s
and updates/s read from group 0's metrics once learning started. Weak scaling: every group keeps the same work (the
same updates at the same replay ratio), so the efficiency is the per-group update rate kept, `ups_G / ups_1`. The
reference for the synchronisation's own cost is G independent single-group runs started at once, each bound to its
own core: `ups_G / ups_independent`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable


from jaxrl_dist.errors import UserError

FAKE_FLAG = "--xla_force_host_platform_device_count"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/dqn_cartpole.yaml", help="config whose algorithm and network are used")
    p.add_argument("--devices", default="1,2,4,8", help="device counts to measure")
    p.add_argument("--batch-per-device", type=int, default=64, help="weak scaling: transitions per device per update")
    p.add_argument("--global-batch", type=int, default=512, help="strong scaling: transitions per update in all")
    p.add_argument("--seconds", type=float, default=2.0, help="measuring window per figure")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--groups", default="1,2", help="MPI group counts to measure (empty: skip the groups part)")
    p.add_argument("--group-steps", type=int, default=60_000, help="env steps per group in each groups run")
    p.add_argument("--sync", default="grads,params", help="how the groups synchronise: grads, params or both")
    p.add_argument("--repeats", type=int, default=3, help="runs per groups figure; the median is reported")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise UserError(f"--devices {text!r} is not allowed; use a comma-separated list of counts >= 1, e.g. 1,2,4,8")
    return counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = _counts(args.devices)
    import jax

    if jax.device_count() < max(counts):
        if jax.default_backend() != "cpu":
            raise UserError(f"--devices needs {max(counts)} devices; this machine has {jax.device_count()}")
        return _rerun_with_fake_devices(max(counts), args)
    bad = [n for n in counts if args.global_batch % n]
    if bad:
        raise UserError(f"--global-batch {args.global_batch} does not split over {bad} devices; use a multiple of each")
    cfg_spec = _algorithm(args)
    weak = {n: _updates_per_s(cfg_spec, n, args.batch_per_device * n, args.seconds) for n in counts}
    strong = {n: _updates_per_s(cfg_spec, n, args.global_batch, args.seconds) for n in counts}
    base = counts[0]
    return {
        "platform": jax.default_backend(),
        "fake_devices": FAKE_FLAG in os.environ.get("XLA_FLAGS", ""),
        "updates_per_call": cfg_spec[0].roles.learner.updates_per_call,
        "batch_per_device": args.batch_per_device,
        "global_batch": args.global_batch,
        "weak_ups": weak,
        "strong_ups": strong,
        # Weak: the same per-device work, so ideal throughput (samples/s) grows with n: efficiency is ups_n / ups_1.
        "weak_efficiency": {n: weak[n] / weak[base] for n in counts},
        # Strong: the same total work split n ways, ideal ups grows n-fold: efficiency is ups_n / (n * ups_1).
        "strong_efficiency": {n: strong[n] / (strong[base] * n / base) for n in counts},
        "groups": _groups(args),
    }


def _rerun_with_fake_devices(n: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAKE_FLAG}={n}".strip(),
           "JAX_PLATFORMS": "cpu"}
    argv = ["scaling", "--config", args.config, "--devices", args.devices, "--batch-per-device",
            str(args.batch_per_device), "--global-batch", str(args.global_batch), "--seconds", str(args.seconds)]
    argv += [f"--set={o}" for o in args.overrides]
    argv += [f"--groups={args.groups}", "--group-steps", str(args.group_steps), f"--sync={args.sync}",
             "--repeats", str(args.repeats)]
    proc = subprocess.run([sys.executable, "-m", "jaxrl_dist.bench", *argv, "--json"], capture_output=True,
                          text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise UserError(f"bench scaling on {n} fake CPU devices failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("weak_ups", "strong_ups", "weak_efficiency", "strong_efficiency"):
        out[key] = {int(k): v for k, v in out[key].items()}
    return out


def _algorithm(args: argparse.Namespace) -> tuple[Any, Any]:
    from jaxrl_dist.config import load_config
    from jaxrl_dist.roles.graph import prepare

    cfg = load_config(args.config, list(args.overrides))
    return cfg, prepare(cfg).spec


def _updates_per_s(cfg_spec: tuple[Any, Any], n: int, batch: int, seconds: float) -> float:
    import jax

    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.distributed import LearnerMesh, fused_update
    from jaxrl_dist.replay.items import zero_samples

    cfg, spec = cfg_spec
    k = cfg.roles.learner.updates_per_call
    place = LearnerMesh.over(jax.devices()[:n])
    algo = make_algorithm(spec, cfg, place.grad_reduce)
    state = jax.device_put(algo.init(jax.random.PRNGKey(0)), place.replicated)
    batches = jax.device_put(zero_samples(spec, False, (k, batch)), place.batches)
    step = fused_update(algo.update, place)
    state, _ = jax.block_until_ready(step(state, batches))  # compile
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        state, _ = step(state, batches)
        calls += 1
    jax.block_until_ready(state)
    return calls * k / (time.perf_counter() - start)


def render(r: dict[str, Any]) -> str:
    where = f"{r['platform']}{' (fake devices sharing the same cores)' if r['fake_devices'] else ''}"
    lines = [f"bench scaling  learner updates/s on {where}, {r['updates_per_call']} updates per call",
             f"  devices  weak (batch {r['batch_per_device']}/device)  eff   strong (batch {r['global_batch']})  eff"]
    for n in r["weak_ups"]:
        lines.append(f"  {n:7d}  {r['weak_ups'][n]:24,.0f}  {r['weak_efficiency'][n]:4.2f}   "
                     f"{r['strong_ups'][n]:18,.0f}  {r['strong_efficiency'][n]:4.2f}")
    g = r["groups"]
    if isinstance(g, str):
        lines.append(f"  groups: {g}")
        return "\n".join(lines)
    lines.append(f"  groups (mpirun, one core each, {g['steps_per_group']} env steps per group; sync eff: against "
                 f"as many independent single-group runs at once)")
    lines.append("   sync        groups  env steps/s  updates/s  weak eff  sync eff")
    base = min(int(n) for runs in g["runs"].values() for n in runs)
    first = next(iter(g["runs"].values()))
    rows = [("(one)", base, first[base] if base in first else first[str(base)])]
    rows += [("(none)", n, {**f, "sync_efficiency": 1.0}) for n, f in g.get("independent", {}).items()]
    rows += [(sync, n, f) for sync, runs in g["runs"].items() for n, f in runs.items() if int(n) != base]
    for sync, n, f in rows:
        lines.append(f"  {sync:11s} {int(n):6d}  {f['sps']:11,.0f}  {f['ups']:9,.0f}  {f['weak_efficiency']:8.2f}"
                     f"  {f['sync_efficiency']:8.2f}")
    return "\n".join(lines)


def _groups(args: argparse.Namespace) -> dict[str, Any] | str:
    """Env steps/s and updates/s of whole runs with 1, 2, ... groups, or why they were not measured."""
    if not args.groups.strip():
        return "not measured (--groups '')"
    counts = _counts(args.groups)
    import importlib.util
    import shutil

    if importlib.util.find_spec("mpi4jax") is None or shutil.which("mpirun") is None:
        return "not measured: mpi4jax or mpirun is missing (install the mpi extra, docs/benchmarks.md 'Tested with')"
    modes = [m.strip() for m in args.sync.split(",") if m.strip()]
    if not modes or set(modes) - {"grads", "params"}:
        raise UserError(f"--sync {args.sync!r} is not allowed; use grads, params or grads,params")
    base = counts[0]
    # One group does not synchronise, whatever the mode: measured once, the baseline of every mode.
    lone = _median(args, partial(_group_run, args, base, modes[0]))
    # G groups that never meet, started together, each bound to its own core like the groups: the same load on
    # the machine without the synchronisation, so `ups_G / ups_independent` is what synchronising costs.
    independent = {n: _median(args, partial(_independent_run, args, n)) for n in counts if n > base}
    out: dict[str, dict[int, dict[str, float]]] = {}
    for mode in modes:
        runs = {base: dict(lone)}
        runs.update({n: _median(args, partial(_group_run, args, n, mode)) for n in counts if n > base})
        for n, f in runs.items():
            # Each group does the same work at the same replay ratio, so the per-group update rate measures it;
            # group 0's env-step total counts the others' steps only as of the last exchange.
            f["weak_efficiency"] = f["ups"] / lone["ups"] if lone["ups"] else 0.0
            ref = independent.get(n, lone)["ups"]
            f["sync_efficiency"] = f["ups"] / ref if ref else 0.0
        out[mode] = runs
    for n, f in independent.items():
        f["weak_efficiency"] = f["ups"] / lone["ups"] if lone["ups"] else 0.0
    return {"steps_per_group": args.group_steps, "runs": out, "independent": independent}


def _median(args: argparse.Namespace, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The run with the median updates/s of `--repeats` runs (a process on one core here varies by 30% or more
    from run to run, and even within a run)."""
    runs = sorted((run() for _ in range(max(1, args.repeats))), key=lambda f: f["ups"])
    return runs[len(runs) // 2]


def _train_sets(args: argparse.Namespace, root: str, groups: int, sync: str) -> list[str]:
    sets = [f"roles.groups.count={groups}", f"roles.groups.sync={sync}", f"log.root={root}", "log.interval_s=0.25",
            f"train.total_env_steps={args.group_steps * groups}", "eval.interval=0", "log.tensorboard=false",
            "env.num_threads=1", "checkpoint.interval=0", *args.overrides]
    cmd = [sys.executable, "-m", "jaxrl_dist.train", "--config", args.config, "--exp-name", "g", "--quiet"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _group_run(args: argparse.Namespace, n: int, sync: str) -> dict[str, float]:
    """One training run with `n` groups, bound one per core by mpirun; its rates (`_rates`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jaxrl_groups_") as tmp:
        cmd = ["mpirun", "-n", str(n), "-bind-to", "core", *_train_sets(args, tmp, n, sync)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise UserError(f"bench scaling: the {n}-group {sync} run failed: {proc.stderr.strip().splitlines()[-1:]}")
        return _rates(Path(tmp), f"the {n}-group run")


def _independent_run(args: argparse.Namespace, n: int) -> dict[str, float]:
    """`n` single-group runs at once, process i bound to core i (round robin where there are fewer cores): env
    steps/s summed, updates/s averaged over the runs."""
    import tempfile

    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="jaxrl_groups_") as tmp:
        roots = [Path(tmp) / str(i) for i in range(n)]
        logs = [(Path(tmp) / f"{i}.err").open("w+") for i in range(n)]  # files: no pipe fills while another waits
        procs = [subprocess.Popen(_pinned(_train_sets(args, str(root), 1, "grads"), cores[i % len(cores)]),
                                  stdout=subprocess.DEVNULL, stderr=log)
                 for i, (root, log) in enumerate(zip(roots, logs))]
        deadline = time.monotonic() + 1800
        try:
            for proc, log in zip(procs, logs):
                if proc.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                    log.seek(0)
                    raise UserError(f"bench scaling: an independent single-group run failed: "
                                    f"{log.read().strip().splitlines()[-1:]}")
        except subprocess.TimeoutExpired:
            raise UserError("bench scaling: an independent single-group run took longer than 30 min") from None
        finally:
            for proc, log in zip(procs, logs):  # the others, where one failed or hung
                proc.kill()
                proc.wait()
                log.close()
        rates = [_rates(root, "an independent single-group run") for root in roots]
    return {"sps": sum(r["sps"] for r in rates), "ups": sum(r["ups"] for r in rates) / n}


def _pinned(cmd: list[str], core: int) -> list[str]:
    """`cmd` (`python -m module args...`) run bound to `core`: the child binds itself before anything starts (no
    fork of this multithreaded process with Python code to run, as `preexec_fn` would need)."""
    python, _, module, *rest = cmd
    code = (f"import os, runpy, sys; os.sched_setaffinity(0, {{{core}}}); sys.argv = [{module!r}] + sys.argv[1:]; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return [python, "-c", code, *rest]


def _rates(root: Path, what: str) -> dict[str, float]:
    """Env steps/s and updates/s of the run under `root`, between its second metrics line with updates (the first
    holds the compiling calls) and its last but one."""
    from jaxrl_dist.io.metrics import read_metrics

    rows = [r for r in read_metrics(root / "g" / "metrics.jsonl") if r.get("updates", 0) > 0 and "sps" in r]
    if len(rows) < 3:
        raise UserError(f"bench scaling: {what} was too short to measure; raise --group-steps")
    first, last = rows[1], rows[-2]
    dt = last["wall_s"] - first["wall_s"]
    return {"sps": (last["env_steps"] - first["env_steps"]) / dt, "ups": (last["updates"] - first["updates"]) / dt}


__all__ = ["add_arguments", "render", "run"]
