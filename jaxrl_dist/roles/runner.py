"""Drives a run: starts the roles (threads, or one serial loop), evaluates, logs, checkpoints, and shuts down."""

from __future__ import annotations

import dataclasses
import functools
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrl_dist.config import Config
from jaxrl_dist.distributed.peers import Peers
from jaxrl_dist.io import Checkpointer, MetricsWriter, Progress
from jaxrl_dist.io.experiment import BEST_CHECKPOINT_DIR, VIDEO_DIR
from jaxrl_dist.io.video import TensorBoardVideos, recorder
from jaxrl_dist.records import Snapshot
from jaxrl_dist.roles.evaluator import EvalResult, next_multiple
from jaxrl_dist.roles.graph import Graph, Setup, attach_video, build_graph
from jaxrl_dist.roles.resume import checkpoint_meta, checkpoint_tree, read_counters, restore
from jaxrl_dist.roles.sync import Counters

JOIN_TIMEOUT_S = 10.0


@dataclasses.dataclass
class RunResult:
    """How a run ended."""

    env_steps: int
    updates: int
    wall_s: float
    reason: str  # "done" | "solved" | "interrupted"
    best_eval: float | None
    signal: int = 0


class Driver:
    """The main thread of a run: owns metrics, checkpoints, the progress display, and the evaluator's results.

    Evaluation runs inline in serial mode and on the evaluator thread in async mode; either way each result
    comes through `_on_eval`, which writes its metrics line, stops a run that reached `eval.target_return`, and
    keeps the best state, written to `checkpoints_best/` with the next checkpoint.

    Args:
        graph: the wired roles.
        exp_dir: the experiment directory.
        start_time: process start (`time.time()`), the origin of `wall_s`.
        checkpointer: where checkpoints go.
    """

    def __init__(self, graph: Graph, exp_dir: Path, start_time: float, checkpointer: Checkpointer | None) -> None:
        cfg = graph.cfg
        self.g, self.cfg, self.exp_dir, self.start_time = graph, cfg, exp_dir, start_time
        self.ckpt = checkpointer  # None in groups other than 0: only group 0 writes the experiment
        self.metrics: MetricsWriter | NullMetrics = (
            MetricsWriter(exp_dir, tensorboard=cfg.log.tensorboard, start_time=start_time) if graph.lead
            else NullMetrics())
        steps = graph.limiter.total_steps
        self.next_eval = next_multiple(steps + 1, cfg.eval.interval)
        self.next_ckpt = next_multiple(steps + 1, cfg.checkpoint.interval)
        self.last_log = time.monotonic()
        self.last_log_steps, self.last_log_updates = steps, graph.limiter.updates
        self.best_eval: float | None = None
        self.solved = False
        self.signal = 0
        self.returns: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.last_return: float | None = None
        self.last_eval = (-1, -1)  # (env steps, updates) of the last evaluated state
        self.jax_trace_until: float | None = None  # while a jax.profiler window is open: when it closes
        # True once the window is done, or when none is wanted (only the lead process profiles)
        self.jax_traced = cfg.log.jax_profile_s <= 0 or not graph.lead
        self.eval_results: queue.Queue[EvalResult] = queue.Queue(maxsize=4)
        self.best_pending: EvalResult | None = None  # a new best not yet written to checkpoints_best/
        self.best_ckpt = Checkpointer(exp_dir / BEST_CHECKPOINT_DIR, keep=1) if graph.lead else None
        self.tb_videos: TensorBoardVideos | None = None
        if graph.evaluator is not None and cfg.eval.video:
            self.tb_videos = TensorBoardVideos(exp_dir / "tb") if cfg.log.tensorboard else None
            video = recorder(exp_dir / VIDEO_DIR, cfg.eval.video_fps, "eval_", self.tb_videos)
            attach_video(graph.evaluator, cfg, graph.plan.eval_seed, video, lambda msg: self.progress.log(msg))

    # ------------------------------------------------------------------------------------------------ entry

    def run(self) -> RunResult:
        cfg, g = self.cfg, self.g
        quiet = cfg.log.quiet
        try:
            with Progress(cfg.train.total_env_steps, quiet=quiet, print_every_s=10.0, silent=not g.lead
                          ) as self.progress:
                with _signals(self._on_signal):
                    try:
                        if cfg.roles.mode == "serial":
                            self._run_serial()
                        else:
                            self._run_async()
                    finally:
                        stuck = g.lifetime.stop(JOIN_TIMEOUT_S)
                        if stuck:
                            self.progress.log(f"warning: roles still running after {JOIN_TIMEOUT_S:.0f} s: {stuck}")
                g.lifetime.check()
                self._finish()
        finally:
            if self.best_ckpt is not None:
                self.best_ckpt.close()
            if self.tb_videos is not None:
                self.tb_videos.close()
            self._jax_profile(stop=True)
            if g.timers.trace is not None and g.lead:  # also after a crash: the trace shows what led to it
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.start_time))
                path = g.timers.trace.write(self.exp_dir / f"trace_{stamp}.json")
                print(f"profile: {path} (open it in ui.perfetto.dev)", flush=True)
        reason = "interrupted" if self.signal else ("solved" if self.solved else "done")
        return RunResult(g.limiter.total_steps, g.limiter.updates, time.time() - self.start_time, reason,
                         self.best_eval, self.signal)

    def _on_signal(self, signum: int) -> None:
        self.signal = signum
        self.g.lifetime.stop_event.set()

    # ------------------------------------------------------------------------------------------------ loops

    def _run_serial(self) -> None:
        """One thread, deterministic: an env round, then every update the ratio allows, then the driver's duties."""
        g, stop = self.g, self.g.lifetime.stop_event
        actor, learner, limiter, k = g.actors[0], g.learner, g.limiter, g.plan.updates_per_call
        actor.start()
        while not stop.is_set() and limiter.env_steps < g.plan.env_step_budget:
            actor.refresh_params()
            actor.step(g.timers)
            while not stop.is_set() and limiter.learner_may_run(k) and g.path.ready():
                learner.train_call(g.path.next_batch(), g.timers)
            self._tick()
        limiter.finished = True
        while not stop.is_set() and limiter.learner_may_run(k):
            learner.train_call(g.path.next_batch(), g.timers)
        learner.leave()

    def _run_async(self) -> None:
        """Role threads; this thread watches them and does evaluation, logging and checkpoints."""
        g, cfg = self.g, self.cfg
        life, total = g.lifetime, g.plan.env_step_budget
        warm = g.path.warmup_batches()
        actors = [life.spawn(f"actor{a.index}", functools.partial(a.run, life, g.timers, total)) for a in g.actors]
        for name, loop in g.path.threads():
            life.spawn(name, loop)
        learner = life.spawn("learner", lambda: g.learner.run(life, g.timers, g.path.queue, warm))
        if g.evaluator is not None:
            life.spawn("evaluator", functools.partial(
                g.evaluator.run_thread, life, g.timers, self._snapshot, self.next_eval, cfg.eval.interval,
                self.eval_results, g.plan.eval_envs,
            ))  # fmt: skip
        while not life.stop_event.wait(0.02):
            if not g.limiter.finished and not any(t.is_alive() for t in actors):
                g.limiter.finished = True  # the env-step budget is spent: release the learner to catch up
                g.limiter.notify()
            self._tick()
            if g.limiter.finished and not learner.is_alive():
                break

    # ------------------------------------------------------------------------------------------------ duties

    def _tick(self) -> None:
        """Evaluation, checkpoint and metrics when they are due; progress every call."""
        g, cfg = self.g, self.cfg
        steps = g.limiter.total_steps
        for actor in g.actors:
            returns, lengths = actor.drain_episodes()
            if len(returns):
                self.returns.append(returns)
                self.lengths.append(lengths)
                self.last_return = float(returns[-1])
        if g.evaluator is not None and cfg.roles.mode == "serial" and steps >= self.next_eval:
            self.next_eval = next_multiple(steps + 1, cfg.eval.interval)
            self._evaluate_now(stop=g.lifetime.stop_event)  # Ctrl-C does not wait for the episodes to end
        self._drain_evals()
        if cfg.checkpoint.interval and steps >= self.next_ckpt:
            self.next_ckpt = next_multiple(steps + 1, cfg.checkpoint.interval)
            self.save()
        self._jax_profile()
        now = time.monotonic()
        if now - self.last_log >= cfg.log.interval_s:
            self._log(steps, now)
        self.progress.update(steps, ret=self.last_return)

    def _jax_profile(self, stop: bool = False) -> None:
        """Opens one `jax.profiler` window of `log.jax_profile_s` seconds at the first learner update, and closes it
        when the time is up or the run ends (XLA op timings, written under jax_profile/ for Perfetto or
        TensorBoard's profile plugin)."""
        if self.jax_trace_until is None:
            if self.jax_traced or stop or self.g.limiter.updates == 0:
                return
            jax.profiler.start_trace(str(self.exp_dir / "jax_profile"))
            self.jax_trace_until = time.monotonic() + self.cfg.log.jax_profile_s
        elif stop or time.monotonic() >= self.jax_trace_until:
            jax.profiler.stop_trace()
            self.jax_trace_until, self.jax_traced = None, True
            self.progress.log(f"jax profile: {self.exp_dir / 'jax_profile'} (open the trace.json.gz in ui.perfetto.dev)")

    def _snapshot(self) -> Snapshot:
        """The newest learner state with its updates, at the run's env steps now (read by the evaluator thread too:
        one attribute read)."""
        return self.g.learner.snapshot._replace(env_steps=self.g.limiter.total_steps)

    def _evaluate_now(self, stop: threading.Event | None = None) -> None:
        """Evaluates the newest learner state in this thread (serial mode, and the final evaluation); an
        evaluation cut short by `stop` is dropped."""
        assert self.g.evaluator is not None
        with self.g.timers.span("eval/run"):
            result = self.g.evaluator.evaluate(self._snapshot(), stop=stop)
        if result is not None:
            self._on_eval(result)

    def _drain_evals(self) -> None:
        """Takes the results the evaluator thread finished (async mode)."""
        while True:
            try:
                result = self.eval_results.get_nowait()
            except queue.Empty:
                return
            self._on_eval(result)

    def _on_eval(self, result: EvalResult) -> None:
        """One evaluation's metrics line (at the env steps of the parameters it evaluated), best state, target."""
        snap, mean = result.snapshot, result.mean_return
        self.last_eval = (snap.env_steps, snap.updates)
        self.metrics.write(snap.env_steps, {**result.stats, "eval/updates": snap.updates})
        target = self.cfg.eval.target_return
        if target is not None and mean >= target and not self.solved:
            self.solved = True
            self.progress.log(f"solved: eval return {mean:.1f} >= {target:g} at {snap.env_steps} env steps")
            self.g.lifetime.stop_event.set()
        if self.best_eval is None or mean > self.best_eval:
            self.best_eval = mean
            self.best_pending = result

    def _log(self, steps: int, now: float, extra: dict[str, float] | None = None) -> None:
        g = self.g
        dt = max(now - self.last_log, 1e-9)
        updates = g.limiter.updates
        sps = (steps - self.last_log_steps) / dt
        ups = (updates - self.last_log_updates) / dt
        record: dict[str, Any] = {
            "updates": updates, "sps": sps, "ups": ups, "train/epsilon": g.algo.exploration(steps),
            "replay/size": g.path.size(), "replay/prefetch_depth": g.path.queue.depth(),
            "params/version": g.store.version,
        }
        if self.returns:
            returns, lengths = np.concatenate(self.returns), np.concatenate(self.lengths)
            record.update({"train/episode_return": float(returns.mean()),
                           "train/episode_length": float(lengths.mean()), "train/episodes": int(len(returns))})
            self.returns, self.lengths = [], []
        record.update({f"train/{k}": float(v) for k, v in jax.device_get(g.learner.metrics).items()})
        record.update(g.timers.snapshot())
        record.update(extra or {})
        self.metrics.write(steps, record)
        self.progress.update(steps, sps=sps, ups=ups, ret=self.last_return)
        self.last_log, self.last_log_steps, self.last_log_updates = now, steps, updates

    def save(self) -> None:
        """Writes a checkpoint of the newest consistent learner state (labelled with the env-step count), and the
        best evaluated state to `checkpoints_best/` if it improved since the last save."""
        g = self.g
        if self.ckpt is None:
            return
        snap = self._snapshot()
        extra = g.path.state_dict() if self.cfg.checkpoint.save_replay else None
        with g.timers.span("checkpoint/save"):
            meta = checkpoint_meta(g, snap.env_steps, snap.updates, self.best_eval)
            self.ckpt.save(snap.env_steps, checkpoint_tree(g, snap.state), meta.to_dict(), extra)
            best, self.best_pending = self.best_pending, None
            if best is not None and self.best_ckpt is not None:
                at = best.snapshot
                meta = checkpoint_meta(g, at.env_steps, at.updates, self.best_eval, best.stats)
                if not self.best_ckpt.save(at.env_steps, checkpoint_tree(g, at.state), meta.to_dict()):
                    self.progress.log(f"warning: best checkpoint of step {at.env_steps} not written: "
                                      f"{self.best_ckpt.directory} holds a later step (from before a resume)")

    def _finish(self) -> None:
        """Final evaluation (unless the last one is current), final checkpoint, last metrics line."""
        g, steps = self.g, self.g.limiter.total_steps
        self._drain_evals()  # results the evaluator thread finished before it stopped
        # The learner may have caught up on updates after the actors' last env step: compare updates too.
        current = (steps, g.learner.snapshot.updates)
        if g.evaluator is not None and not self.solved and not self.signal and self.last_eval != current:
            self._evaluate_now()
        self.save()
        extra = {}
        sync = g.learner.sync
        if sync is not None and sync.identical is not None:
            extra["groups/identical_state"] = float(sync.identical)
            if not sync.identical:
                peers = sync.group
                self.progress.log(f"warning: the {peers.count} {peers.plural} ended with different learner states")
        self._log(steps, time.monotonic(), extra)
        self.metrics.close()


def train(cfg: Config, exp_dir: Path, *, resume: bool, start_time: float, group: Peers | None = None,
          setup: Setup | None = None) -> RunResult:
    """Builds the graph (restoring the latest checkpoint on resume) and runs it to the end. With MPI groups or
    `jax.distributed` processes, pass this process's `group`: only rank 0 writes checkpoints, every rank restores
    from them. `setup` is the run's `prepare(cfg, group)` when the caller made it already."""
    lead = group is None or group.lead
    ckpt = Checkpointer(exp_dir / "checkpoints", keep=cfg.checkpoint.keep) if lead or resume else None
    graph = None
    try:
        counters = read_counters(ckpt, cfg.checkpoint.save_replay) if ckpt is not None and resume else Counters()
        if group is not None:
            counters = dataclasses.replace(counters, replay_restored=False)  # the replay saved is group 0's
        graph = build_graph(cfg, counters=counters, group=group, setup=setup)
        best = restore(graph, ckpt).best_eval if ckpt is not None and resume else None
        return run_graph(graph, exp_dir, start_time, ckpt if lead else None, best_eval=best)
    finally:
        if graph is not None:
            graph.close()
        if ckpt is not None:
            ckpt.close()


def run_graph(
    graph: Graph, exp_dir: Path, start_time: float, ckpt: Checkpointer | None = None, best_eval: float | None = None
) -> RunResult:
    """Drives a built graph to its end and closes it; checkpoints go to `exp_dir/checkpoints` unless `ckpt` is given
    (in a group other than 0, nothing is written)."""
    own = ckpt is None and graph.lead
    if own:
        ckpt = Checkpointer(exp_dir / "checkpoints", keep=graph.cfg.checkpoint.keep)
    try:
        driver = Driver(graph, exp_dir, start_time, ckpt)
        driver.best_eval = best_eval
        return driver.run()
    finally:
        graph.close()
        if own and ckpt is not None:
            ckpt.close()


class NullMetrics:
    """The metrics writer of groups other than 0: group 0 writes the run's metrics."""

    def write(self, env_steps: int, metrics: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _signals:
    """Routes SIGINT, SIGTERM and SIGUSR1 to a callback while active (main thread only), then restores old handlers.

    SIGUSR1 is what Slurm sends before a job's time limit (`--signal=B:USR1@margin`, forwarded by the sbatch script):
    the run checkpoints and exits with 128 + 10, which the script answers with `scontrol requeue`.
    """

    def __init__(self, callback: Any) -> None:
        self.callback = callback
        self.old: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                self.old[sig] = signal.signal(sig, lambda signum, frame: self.callback(signum))

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
