"""Drives a run: starts the roles (threads, or one serial loop), evaluates, logs, checkpoints, and shuts down."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import threading
import time
from pathlib import Path
from typing import Any

from jaxrl_dist.config import Config, to_dict
from jaxrl_dist.distributed.peers import Peers
from jaxrl_dist.io import Checkpointer, MetricsWriter, Progress
from jaxrl_dist.io.checkpoint import CheckpointMeta
from jaxrl_dist.io.experiment import BEST_CHECKPOINT_DIR, VIDEO_DIR
from jaxrl_dist.io.jax_profile import JaxProfileWindow
from jaxrl_dist.io.tracking import open_tracker
from jaxrl_dist.io.video import TensorBoardVideos, recorder
from jaxrl_dist.records import Snapshot
from jaxrl_dist.roles.evaluator import EvalFailure, EvalResult, evaluate_within, next_multiple
from jaxrl_dist.roles.graph import Graph, Setup, attach_video, build_graph
from jaxrl_dist.roles.resume import RunSaver, read_counters, restore
from jaxrl_dist.roles.signals import Signals, signal_name
from jaxrl_dist.roles.sync import Counters
from jaxrl_dist.roles.train_line import TrainLine

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

    Evaluation runs in the driver's turn in serial mode and on the evaluator thread in async mode; either way each
    result comes through `_on_eval`, which writes its metrics line, stops a run that reached `eval.target_return`, and
    keeps the best state, written to `checkpoints_best/` with the next checkpoint. A failed evaluation is a warning
    and an `eval/failed` count; training goes on.

    Args:
        graph: the wired roles.
        exp_dir: the experiment directory.
        start_time: process start (`time.time()`), the origin of `wall_s`.
        checkpointer: where checkpoints go.
        signals: the process's signal handler (`train` installs it at start-up); None installs one for the run.
        resumed: the meta of the checkpoint this run resumed from (its best return, its W&B run), or None.
    """

    def __init__(self, graph: Graph, exp_dir: Path, start_time: float, checkpointer: Checkpointer | None,
                 signals: Signals | None = None, resumed: CheckpointMeta | None = None) -> None:
        cfg = graph.cfg
        self.g, self.cfg, self.exp_dir, self.start_time = graph, cfg, exp_dir, start_time
        self.own_signals, self.signals = signals is None, signals or Signals()
        self.metrics: MetricsWriter | NullMetrics = NullMetrics()
        self.wandb_run_id = resumed.wandb_run_id if resumed is not None else None
        if graph.lead:
            tracker = open_tracker(to_dict(cfg), cfg.log.wandb, exp_dir, run_id=self.wandb_run_id)
            self.wandb_run_id = tracker.run_id if tracker is not None else self.wandb_run_id
            self.metrics = MetricsWriter(exp_dir, tensorboard=cfg.log.tensorboard, start_time=start_time,
                                         tracker=tracker)
        steps = graph.limiter.total_steps
        self.next_eval = next_multiple(steps + 1, cfg.eval.interval)
        self.next_ckpt = next_multiple(steps + 1, cfg.checkpoint.interval)
        self.line = TrainLine(graph, steps)
        self.best_eval: float | None = resumed.best_eval if resumed is not None else None
        self.solved = False
        self.signal = 0
        self.last_eval = (-1, -1)  # (env steps, updates) of the last evaluated state
        self.eval_failed, self.eval_hung = 0, False  # failed evaluations; whether one never returned
        self.jax_window = JaxProfileWindow(exp_dir / "jax_profile", cfg.log.jax_profile_s if graph.lead else 0.0,
                                           lambda line: self.progress.log(line))
        self.eval_results: queue.Queue[EvalResult | EvalFailure] = queue.Queue(maxsize=4)
        # None in groups other than 0: only group 0 writes the experiment
        self.saver = RunSaver(graph, checkpointer, exp_dir / BEST_CHECKPOINT_DIR, self.wandb_run_id,
                              lambda line: self.progress.log(line)) if checkpointer is not None else None
        self.tb_videos: TensorBoardVideos | None = None
        if graph.evaluator is not None and cfg.eval.video:
            self.tb_videos = TensorBoardVideos(exp_dir / "tb") if cfg.log.tensorboard else None
            video = recorder(exp_dir / VIDEO_DIR, cfg.eval.video_fps, "eval_", self.tb_videos)
            attach_video(graph.evaluator, cfg, graph.plan.eval_seed, video, lambda msg: self.progress.log(msg))

    # ------------------------------------------------------------------------------------------------ entry

    def run(self) -> RunResult:
        cfg, g = self.cfg, self.g
        signals = self.signals.install() if self.own_signals else self.signals  # outside `train`: while it runs
        try:
            with Progress(cfg.train.total_env_steps, quiet=cfg.log.quiet, print_every_s=10.0, silent=not g.lead
                          ) as self.progress, signals.routed(self._on_signal), signals.busy("training"):
                try:
                    if cfg.roles.mode == "serial":
                        self._run_serial()
                    else:
                        self._run_async()
                finally:
                    with signals.busy("waiting for the roles to stop"):
                        stuck = g.lifetime.stop(JOIN_TIMEOUT_S, g.timers, self.progress.log)
                    if stuck:
                        self.progress.log(f"warning: {', '.join(stuck)} still running after {JOIN_TIMEOUT_S:.0f} s; "
                                          f"the run ends without {'it' if len(stuck) == 1 else 'them'}")
                g.lifetime.check()
                self._finish()
        finally:
            self.metrics.close()  # also after a crash: metrics.jsonl and the TensorBoard files are complete
            if self.own_signals:
                signals.restore()
            if self.saver is not None:
                self.saver.close()
            if self.tb_videos is not None:
                self.tb_videos.close()
            self.jax_window.tick(g.limiter.updates, stop=True)
            if g.timers.trace is not None and g.lead:  # also after a crash: the trace shows what led to it
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.start_time))
                path = g.timers.trace.write(self.exp_dir / f"trace_{stamp}.json")
                print(f"profile: {path} (open it in ui.perfetto.dev)", flush=True)
        reason = "interrupted" if self.signal else ("solved" if self.solved else "done")
        return RunResult(g.limiter.total_steps, g.limiter.updates, time.time() - self.start_time, reason,
                         self.best_eval, self.signal)

    def _on_signal(self, signum: int) -> None:
        """The first signal (in the signal handler): stop the roles; `_finish` saves the checkpoint."""
        self.signal = signum
        self.g.lifetime.stop_event.set()
        self.signals.say(f"{signal_name(signum)}: stopping the roles, then saving a checkpoint")

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
        life.spawn("publisher", functools.partial(g.learner.publisher.run, life))
        if g.evaluator is not None:
            life.spawn("evaluator", functools.partial(
                g.evaluator.run_thread, life, g.timers, self._snapshot, self.next_eval, cfg.eval.interval,
                self.eval_results, g.plan.eval_envs, lambda: g.limiter.total_steps,
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
        self.line.collect()
        if g.evaluator is not None and cfg.roles.mode == "serial" and steps >= self.next_eval:
            self.next_eval = next_multiple(steps + 1, cfg.eval.interval)
            self._evaluate_now(stop=g.lifetime.stop_event)  # Ctrl-C does not wait for the episodes to end
        self._drain_evals()
        if cfg.checkpoint.interval and steps >= self.next_ckpt:
            self.next_ckpt = next_multiple(steps + 1, cfg.checkpoint.interval)
            # Not when the run is ending (a stop, a solve, the budget spent): `_finish` saves its last state now.
            if not g.lifetime.stop_event.is_set() and g.limiter.env_steps < g.plan.env_step_budget:
                self.save()
        self.jax_window.tick(g.limiter.updates)
        now = time.monotonic()
        if now - self.line.since >= cfg.log.interval_s:
            self._log(steps, now)
        self.progress.update(steps, ret=self.line.last_return)

    def _snapshot(self) -> Snapshot:
        """A copy of the newest learner state with its updates, at the run's env steps now (taken between learner
        calls; read by the evaluator thread too)."""
        return self.g.learner.read_snapshot(self.g.limiter.total_steps)

    def _evaluate_now(self, stop: threading.Event | None = None) -> None:
        """Evaluates the newest learner state in this thread's turn (serial mode, and the final evaluation), waiting
        at most the evaluator's timeout; an evaluation cut short by `stop` is dropped."""
        assert self.g.evaluator is not None
        if self.eval_hung:
            return  # its envs never returned: no second evaluation waits on them
        with self.g.timers.span("eval/run"):
            result = evaluate_within(self.g.evaluator, self._snapshot(), stop)
        if result is not None:
            self._on_eval(result)

    def _drain_evals(self) -> None:
        """Takes the results the evaluator thread finished (async mode), and gives up on one that hangs."""
        ev = self.g.evaluator
        if ev is not None and not self.eval_hung and ev.stuck():
            self._on_eval(EvalFailure(self.g.limiter.total_steps, "it has not returned within its timeout", hung=True))
        while True:
            try:
                result = self.eval_results.get_nowait()
            except queue.Empty:
                return
            self._on_eval(result)

    def _on_eval(self, result: EvalResult | EvalFailure) -> None:
        """One evaluation's metrics line (at the env steps of the parameters it evaluated), best state, target; or a
        failed one's warning and count."""
        if isinstance(result, EvalFailure):
            self.eval_failed, self.eval_hung = self.eval_failed + 1, self.eval_hung or result.hung
            off = "; evaluations are off for the rest of this run" if result.hung else ""
            self.progress.log(f"warning: the evaluation at {result.env_steps} env steps failed ({result.error}); "
                              f"training goes on{off}")
            self.metrics.write(result.env_steps, {"eval/failed": self.eval_failed})
            return
        snap, mean = result.snapshot, result.mean_return
        self.last_eval = (snap.env_steps, snap.updates)
        self.metrics.write(snap.env_steps, {**result.stats, "eval/updates": snap.updates})
        if result.video is not None:
            self.metrics.log_video(result.video, snap.env_steps)
        target = self.cfg.eval.target_return
        if target is not None and mean >= target and not self.solved:
            self.solved = True
            self.progress.log(f"solved: eval return {mean:.1f} >= {target:g} at {snap.env_steps} env steps")
            self.g.lifetime.stop_event.set()
        if self.best_eval is None or mean > self.best_eval:
            self.best_eval = mean
            if self.saver is not None:
                self.saver.offer_best(result)

    def _log(self, steps: int, now: float, extra: dict[str, float] | None = None) -> None:
        record = self.line.take(steps, now)
        if self.eval_failed:
            record["eval/failed"] = self.eval_failed
        record.update(extra or {})
        self.metrics.write(steps, record)
        self.progress.update(steps, sps=record["sps"], ups=record["ups"], ret=self.line.last_return)

    def save(self, final: bool = False) -> None:
        """A checkpoint of the newest learner state, and of the best evaluated one if it improved (`RunSaver.save`)."""
        if self.saver is not None:
            self.saver.save(self.best_eval, self.signals, final)

    def _finish(self) -> None:
        """Final checkpoint first (no trained work waits on an evaluation), then the final evaluation (unless the
        last one is current, or a signal stopped the run: one that comes during it cuts it short), the best
        checkpoint, and the last metrics line."""
        g, steps = self.g, self.g.limiter.total_steps
        self._drain_evals()  # results the evaluator thread finished before it stopped
        self.save(final=True)
        # The learner may have caught up on updates after the actors' last env step: compare updates too.
        current = (steps, g.learner.updates)
        if g.evaluator is not None and not self.solved and not self.signal and self.last_eval != current:
            with self.signals.busy("running the final evaluation"):
                self._evaluate_now(self.signals.event)
            if self.saver is not None:
                self.saver.save_best(self.best_eval)
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
          setup: Setup | None = None, signals: Signals | None = None) -> RunResult:
    """Builds the graph (restoring the latest checkpoint on resume) and runs it to the end. With MPI groups or
    `jax.distributed` processes, pass this process's `group`: only rank 0 writes checkpoints, every rank restores
    from them. `setup` is the run's `prepare(cfg, group)` when the caller made it already. With `signals`, a signal
    while the graph is built raises `Interrupted` (nothing is trained yet), and one during the run stops it."""
    lead = group is None or group.lead
    ckpt = Checkpointer(exp_dir / "checkpoints", keep=cfg.checkpoint.keep) if lead or resume else None
    graph = None
    try:
        with signals.interruptible("building the run") if signals is not None else contextlib.nullcontext():
            counters = read_counters(ckpt, cfg.checkpoint.save_replay) if ckpt is not None and resume else Counters()
            if group is not None:
                counters = dataclasses.replace(counters, replay_restored=False)  # the replay saved is group 0's
            graph = build_graph(cfg, counters=counters, group=group, setup=setup)
            resumed = restore(graph, ckpt) if ckpt is not None and resume else None
        return run_graph(graph, exp_dir, start_time, ckpt if lead else None, resumed=resumed, signals=signals)
    finally:
        if graph is not None:
            graph.close()
        if ckpt is not None:
            ckpt.close()


def run_graph(
    graph: Graph, exp_dir: Path, start_time: float, ckpt: Checkpointer | None = None,
    resumed: CheckpointMeta | None = None, signals: Signals | None = None,
) -> RunResult:
    """Drives a built graph to its end and closes it; checkpoints go to `exp_dir/checkpoints` unless `ckpt` is given
    (in a group other than 0, nothing is written). `signals`: see `Driver`."""
    own = ckpt is None and graph.lead
    if own:
        ckpt = Checkpointer(exp_dir / "checkpoints", keep=graph.cfg.checkpoint.keep)
    try:
        return Driver(graph, exp_dir, start_time, ckpt, signals, resumed).run()
    finally:
        graph.close()
        if own and ckpt is not None:
            ckpt.close()


class NullMetrics:
    """The metrics writer of groups other than 0: group 0 writes the run's metrics."""

    def write(self, env_steps: int, metrics: Any) -> None:
        pass

    def log_video(self, path: Path, env_steps: int) -> None:
        pass

    def close(self) -> None:
        pass
