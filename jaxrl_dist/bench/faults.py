"""`bench faults`: SIGKILL a default CartPole run at random moments, resume it each time, and check what survived.

One experiment is trained by `python -m jaxrl_dist.train --resume --export onnx` processes in turn, as a requeued
Slurm task would be. Each process but the last is killed with SIGKILL: the first during the first save, then at
moments drawn (seeded) from start-up, a checkpoint save and training; the process that reaches the budget (the last
but one kill at the latest) during its final evaluation, and the next during the export; any left during start-up
or the export of the finished run. The next process resumes (`--resume` also starts a run that has no finished
checkpoint yet). The config is the default one with `eval.target_return: null` (so that the run reaches its final
evaluation and export), a checkpoint every 10k env steps with the replay in it, and a metrics line every 0.5 s.

Checked after every kill: every finished checkpoint (also `checkpoints_best/`) restores, and the env steps lost (the
killed process's last metrics line minus the checkpoint the next one resumes from) are at most one checkpoint
interval. At the end: every process exited 0 or was killed by us, each resumed process continued from its
checkpoint, metrics.jsonl parses but for at most one cut line per kill, the run reached the config's target return
and its export exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "dqn_cartpole.yaml")
SETS = ("eval.target_return=null", "checkpoint.interval=10000", "checkpoint.save_replay=true", "log.interval_s=0.5")
RUNNING = ("start-up", "save", "training")  # moments of a run that has budget left
FINISHED = ("start-up", "export")  # moments of a run whose budget is spent
MOMENTS = (*RUNNING, "final evaluation", "export")
POLL_S = 0.005
MAX_MISSES = 5
NAME = "cartpole"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs before the last, uninterrupted process")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments (the run's own is the config's)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config to train (default: the CartPole default)")
    p.add_argument("--root", help="experiments folder (default: a temporary one, deleted afterwards)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per process")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


class Process:
    """One `train` process of the battery, its output in files (no pipe can fill while it is watched)."""

    def __init__(self, cmd: list[str], folder: Path, index: int) -> None:
        self.out, self.err = folder / f"p{index}.out", folder / f"p{index}.err"
        self.start = time.time()
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxrl_dist.config import load_config
    from jaxrl_dist.errors import UserError

    if args.kills < 0:
        raise UserError(f"--kills {args.kills} is not allowed: use 0 or more")
    cfg = load_config(args.config, [*SETS, *args.overrides])
    target = load_config(args.config, []).eval.target_return
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="jaxrl_faults_"))
    try:
        return battery(args, cfg, target, root)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def battery(args: argparse.Namespace, cfg: Any, target: float | None, root: Path) -> dict[str, Any]:
    exp, logs = root / NAME, root / "faults_logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "jaxrl_dist.train", "--config", args.config, "--exp-name", NAME, "--quiet",
           "--resume", "--export", "onnx", "--set", f"log.root={root}"]
    for s in (*SETS, *args.overrides):
        cmd += ["--set", s]
    rng = random.Random(args.seed)
    budget, interval = cfg.train.total_env_steps, cfg.checkpoint.interval
    # The final checkpoint's step: a run ends within an env round of its budget (not always past it), well after
    # its last periodic checkpoint.
    done_at = budget - max(1, interval // 2)
    kills: list[dict[str, Any]] = []
    failures: list[str] = []
    missed: dict[str, int] = {}  # processes that ended before their moment, by moment
    spawned: list[tuple[float, int | None]] = []  # each process: when it started, the checkpoint it resumes from
    startup_s, index, begin = 8.0, 0, time.monotonic()
    while len(kills) < args.kills:
        finished = (_latest(exp) or 0) >= done_at
        moment = _moment(kills, args.kills - len(kills), _latest(exp), done_at, interval, rng)
        p = Process(cmd, logs, index)
        spawned.append((p.start, _latest(exp)))
        index += 1
        triggers = {moment: _trigger(moment, p, exp, done_at, rng, startup_s)}
        if not finished:  # a process that trains to the end before its moment is killed in its final evaluation
            triggers.setdefault("final evaluation", _trigger("final evaluation", p, exp, done_at, rng, startup_s))
        fired = _wait(p, triggers, args.timeout)
        if fired is None:
            code = p.proc.returncode
            if code != 0:
                failures.append(f"process {index - 1} exited {code} before the {moment} kill: {p.stderr()[-800:]}")
                break
            missed[moment] = missed.get(moment, 0) + 1
            if missed[moment] > MAX_MISSES:
                failures.append(f"the {moment} moment was never reached in {MAX_MISSES} processes")
                break
            continue  # the process ended before the moment came (the run's budget was spent): draw again
        p.proc.kill()
        p.proc.wait()
        moment, mine = fired, _records(exp, p.start)
        if moment == "final evaluation" and _ended(p):
            moment = "export"  # the evaluation was over before the kill
        if mine:  # how long start-up takes here, for the next start-up kill
            startup_s = max(0.5, mine[0]["time"] - p.start)
        latest = _latest(exp)
        steps = max((r["env_steps"] for r in mine), default=None)
        lost = max(0, steps - (latest or 0)) if steps is not None else 0
        kills.append({"moment": moment, "after_s": round(time.time() - p.start, 2), "env_steps": steps,
                      "resume_from": latest, "lost": lost, "finished": finished})
        failures += [f"kill {len(kills)} ({moment}): {why}" for why in _corrupt(exp)]
        if lost > interval + cfg.env.num_envs * 4:
            failures.append(f"kill {len(kills)} ({moment}) lost {lost} env steps, more than checkpoint.interval")
    last = Process(cmd, logs, index)
    spawned.append((last.start, _latest(exp)))
    try:
        code = last.proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        last.proc.kill()
        code = -9
    if code != 0:
        failures.append(f"the last process exited {code}: {last.stderr()[-800:]}")
    failures += _final_checks(exp, kills, spawned)
    evals = [float(r["eval/episode_return"]) for r in _records(exp, 0.0) if r.get("eval/episode_return") is not None]
    best = max(evals, default=None)
    lost = [k["lost"] for k in kills]
    return {
        "kills": len(kills), "moments": {m: sum(k["moment"] == m for k in kills) for m in MOMENTS},
        "checkpoint_interval": interval, "budget": budget, "median_lost_env_steps": statistics.median(lost or [0]),
        "max_lost_env_steps": max(lost or [0]), "best_eval": best, "target": target,
        "solved": target is None or (best is not None and best >= target), "failures": failures,
        "missed": missed, "processes": index + 1, "wall_s": round(time.monotonic() - begin, 1), "detail": kills,
    }


def _moment(kills: list[dict[str, Any]], left: int, latest: int | None, done_at: int, interval: int,
            rng: random.Random) -> str:
    """The next kill's moment (`left` kills to go): the first save first; the final evaluation once, by the process
    that reaches the budget (the last but one kill at the latest); the export once the budget is spent; otherwise
    drawn."""
    done = {k["moment"] for k in kills}
    if not kills:
        return "save"
    if (latest or 0) >= done_at:
        return "export" if "export" not in done else rng.choice(FINISHED)
    if "final evaluation" not in done and (left <= 2 or (latest or 0) + interval >= done_at):
        return "final evaluation"
    return rng.choice(RUNNING)


def _trigger(moment: str, p: Process, exp: Path, done_at: int, rng: random.Random, startup_s: float
             ) -> Callable[[], bool]:
    """When to kill: a predicate polled every few milliseconds."""
    at: list[float] = []

    def after(delay: float, condition: Callable[[], bool]) -> Callable[[], bool]:
        def due() -> bool:
            if not at and condition():
                at.append(time.time() + delay)
            return bool(at) and time.time() >= at[0]
        return due

    if moment == "start-up":
        return after(rng.uniform(0.2, startup_s), lambda: True)
    if moment == "save":  # a save of this process: a temporary directory that was not there before
        before = _saves_in_flight(exp)
        return lambda: bool(_saves_in_flight(exp) - before)
    if moment == "training":
        return after(rng.uniform(0.0, 30.0), lambda: bool(_records(exp, p.start)))
    if moment == "final evaluation":  # it follows the final checkpoint at once, and may take only milliseconds
        return after(0.0, lambda: (_latest(exp) or 0) >= done_at)
    # The export follows the run's last line; converting the policy takes seconds before any file is written.
    return after(rng.uniform(0.0, 3.0), lambda: _ended(p))


def _ended(p: Process) -> bool:
    """Whether the process printed its run's last line (`done: ...`), after which only the export runs."""
    return any(line.startswith(("done:", "solved:")) for line in p.out.read_text(errors="replace").splitlines())


def _saves_in_flight(exp: Path) -> set[tuple[str, int]]:
    """Orbax's temporary step directories (name and inode: a new save may reuse a dead one's name)."""
    found = set()
    for folder in (exp / "checkpoints", exp / "checkpoints_best"):
        for child in folder.iterdir() if folder.is_dir() else []:
            if ".orbax-checkpoint-tmp" in child.name:
                with contextlib.suppress(OSError):
                    found.add((f"{folder.name}/{child.name}", child.stat().st_ino))
    return found


def _wait(p: Process, triggers: dict[str, Callable[[], bool]], timeout: float) -> str | None:
    """Polls the triggers until one holds (its moment) or the process ended (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            return None
        for moment, due in triggers.items():
            if due():
                return moment
        time.sleep(POLL_S)
    return next(iter(triggers))  # stuck: kill it, the checks say the rest


def _records(exp: Path, since: float) -> list[dict[str, Any]]:
    """metrics.jsonl lines written by a process started at `since` or later (each line's `time - wall_s`)."""
    path = exp / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("time", 0) - record.get("wall_s", 0) >= since - 1.0:
            out.append(record)
    return out


def _latest(exp: Path) -> int | None:
    folder = exp / "checkpoints"
    steps = [int(c.name) for c in folder.iterdir() if c.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=None)


def _corrupt(exp: Path) -> list[str]:
    """Every finished checkpoint (latest and best) restores, replay included; the ones that do not."""
    from jaxrl_dist.errors import UserError
    from jaxrl_dist.io import Checkpointer
    from jaxrl_dist.io.policy import load_checkpoint

    bad = []
    for folder in (exp / "checkpoints", exp / "checkpoints_best"):
        if not folder.is_dir():
            continue
        with Checkpointer(folder) as ckpt:
            steps = ckpt.all_steps()
        for step in steps:
            try:
                load_checkpoint(folder, step)
            except UserError as err:
                bad.append(f"{folder.name}/{step} does not restore: {err}")
    return bad


def _final_checks(exp: Path, kills: list[dict[str, Any]], spawned: list[tuple[float, int | None]]) -> list[str]:
    failures = []
    path = exp / "metrics.jsonl"
    cut = 0
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            cut += 1
    if cut > len(kills):
        failures.append(f"metrics.jsonl has {cut} unreadable lines after {len(kills)} kills")
    records = _records(exp, 0.0)
    ends = [start for start, _ in spawned[1:]] + [float("inf")]
    for (start, resumed), end in zip(spawned, ends):  # each process continued from its checkpoint
        mine = [r["env_steps"] for r in records if start - 1.0 <= r["time"] - r["wall_s"] < end - 1.0]
        if resumed is not None and mine and mine[0] < resumed:
            failures.append(f"the process started at {start:.0f} resumed from {resumed} but logged {mine[0]} first")
    if not list(exp.glob("export/*/policy.onnx")):
        failures.append("no export/<step>/policy.onnx after the last process")
    return failures


def render(r: dict[str, Any]) -> str:
    moments = ", ".join(f"{m} {n}" for m, n in r["moments"].items())
    lines = [
        f"SIGKILL battery: {r['kills']} kills ({moments}), {r['processes']} processes, {r['wall_s']:.0f} s",
        (f"env steps lost per kill: median {r['median_lost_env_steps']:.0f}, max {r['max_lost_env_steps']} "
         f"(checkpoint.interval {r['checkpoint_interval']})"),
        f"best eval return {r['best_eval']} (target {r['target']}): {'solved' if r['solved'] else 'NOT solved'}",
    ]
    ok = "no failure: every resume succeeded, every checkpoint restored, metrics.jsonl parses"
    lines += [f"FAILURE: {f}" for f in r["failures"]] or [ok]
    return "\n".join(lines)
