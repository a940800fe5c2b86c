"""The evaluator role: full episodes with the greedy / deterministic policy on env instances of its own.

Every evaluation builds fresh envs with the same seeds (env i: `eval_seed + i`), so its result depends on the
parameters alone: two evaluations of one checkpoint, in a run or offline with `python -m jaxrl_dist.evaluate`, give
the same returns. In async mode the evaluator is its own thread (`run_thread`) that takes the newest learner state
every `eval.interval` env steps and hands its results to the driver; in serial mode the driver evaluates in its
own turn (`evaluate_within`), which keeps the run deterministic.

An evaluation that fails (an env that raises, one over its timeout) is an `EvalFailure`, which the driver reports
with a warning and an `eval/failed` count while training goes on: evaluation only observes the run, and no trained
work may be lost to it. One that hangs where no timeout reaches (inside an env's C++ or Python code) is given up
after its timeout (`Evaluator.stuck`, `evaluate_within`).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.envs import EnvSpec, VecEnv
from jaxrl_dist.io.video import EpisodeVideo, RenderError, frame_getter
from jaxrl_dist.records import Snapshot
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.signals import watch

POLL_S = 0.02  # how often the evaluator thread checks whether an evaluation is due


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """One evaluation: `eval/episode_return` and `eval/episode_length` (mean, std, min, max) of `snapshot`."""

    snapshot: Snapshot
    stats: dict[str, float]
    video: Path | None = None

    @property
    def mean_return(self) -> float:
        return self.stats["eval/episode_return"]


@dataclasses.dataclass(frozen=True)
class EvalFailure:
    """An evaluation of the state at `env_steps` that raised or ran over its timeout; `error` says how, in one line;
    `hung`: it never returned (its thread is still inside the env)."""

    env_steps: int
    error: str
    hung: bool = False


GRACE_S = 10.0  # beyond the evaluator's own timeout, before an evaluation that does not return is given up


class Evaluator:
    """Runs one episode in each of `episodes` envs, side by side, and reports the returns.

    Args:
        make_env: `make_env(render)` builds the evaluation envs (the same seeds on every call); with `render`, env 0
            is built so that it can render frames.
        spec: the env spec (observation shape and dtype, to compile the policy ahead of the first evaluation).
        algo: the algorithm; its `eval_act` is the policy and `actor_params` picks its parameters from a state.
        device: where inference runs.
        video: `video(step)` starts recording env 0's episode, labelled with env step `step` (None: no videos).
        probe: checks, before the first recording, that the env renders: None if it does, else why not (see
            `jaxrl_dist.io.video.probe_render`; a renderer can crash the process it runs in).
        warn: prints a one-line warning (a renderer that fails).
        env_id: the env's id, for that warning.
        max_steps: safety bound on the env rounds of one evaluation.
        timeout_s: seconds one evaluation may take (checked between env rounds; see `stuck` for the rest).
    """

    def __init__(
        self,
        make_env: Callable[[bool], VecEnv],
        spec: EnvSpec,
        algo: Algorithm,
        device: jax.Device,
        *,
        video: Callable[[int], EpisodeVideo] | None = None,
        probe: Callable[[], str | None] | None = None,
        warn: Callable[[str], None] = print,
        env_id: str = "",
        max_steps: int = 1_000_000,
        timeout_s: float = 600.0,
    ) -> None:
        self.make_env, self.spec, self.algo, self.device = make_env, spec, algo, device
        self.video, self.probe, self.warn, self.max_steps = video, probe, warn, max_steps
        self.env_id, self.timeout_s = env_id, timeout_s
        self.busy_since: float | None = None  # monotonic start of the evaluation in flight on the evaluator thread
        self._act = jax.jit(algo.eval_act)

    def warmup(self, params: Any, num_envs: int) -> None:
        """Compiles the evaluation policy for a `[num_envs, ...]` batch ahead of the first evaluation."""
        obs = np.zeros((num_envs, *self.spec.obs_shape), self.spec.obs_dtype)
        jax.block_until_ready(self._act(jax.device_put(params, self.device), obs))

    def evaluate(self, snapshot: Snapshot, *, stop: threading.Event | None = None, timeout: float | None = None
                 ) -> EvalResult | None:
        """Evaluates the actor parameters of `snapshot.state` (a video labelled with its env steps, if videos are
        on); None if `stop` was set before the episodes ended."""
        params = self.algo.actor_params(snapshot.state)
        out = self.run(params, stop=stop, video_step=snapshot.env_steps, timeout=timeout or self.timeout_s)
        if out is None:
            return None
        stats, video = out
        return EvalResult(snapshot, stats, video)

    def run(
        self, params: Any, *, stop: threading.Event | None = None, video_step: int | None = None,
        timeout: float = 600.0,
    ) -> tuple[dict[str, float], Path | None] | None:
        """Runs the episodes with `params`; returns (stats, video file) or None if `stop` was set first.

        Raises:
            TimeoutError: The episodes did not end within `timeout` seconds.
        """
        if video_step is not None:
            self._check_renderer()
        clip = self.video(video_step) if self.video is not None and video_step is not None else None
        env = self.make_env(clip is not None)
        try:
            grab = self._frame_getter(env) if clip is not None else None
            if grab is None and clip is not None:
                clip = None
            result = self._episodes(env, jax.device_put(params, self.device), stop, timeout, clip, grab)
        except BaseException:
            if clip is not None:
                clip.discard()
            raise
        finally:
            env.close()
        if result is None:
            if clip is not None:
                clip.discard()
            return None
        return result, clip.close() if clip is not None else None

    def _check_renderer(self) -> None:
        """Runs the render probe once, before the first recording; turns videos off if the env cannot render."""
        if self.video is not None and self.probe is not None:
            reason, self.probe = self.probe(), None
            if reason is not None:
                self._video_off(reason)

    def _frame_getter(self, env: VecEnv) -> Callable[[int], np.ndarray] | None:
        try:
            return frame_getter(env)
        except RenderError as err:
            self._video_off(str(err))
            return None

    def _video_off(self, reason: str) -> None:
        """Warns once and records no more videos; training goes on."""
        if self.video is not None:
            self.warn(f"warning: env {self.env_id} cannot render ({reason}); eval.video is off for this run")
        self.video = None

    def _episodes(
        self, env: VecEnv, params: Any, stop: threading.Event | None, timeout: float,
        clip: EpisodeVideo | None, grab: Callable[[int], np.ndarray] | None,
    ) -> dict[str, float] | None:
        n = env.num_envs
        returns, lengths = np.zeros(n, np.float64), np.zeros(n, np.int64)
        done = np.zeros(n, bool)
        deadline = time.monotonic() + timeout
        env.reset()
        for _ in range(self.max_steps):
            batch = env.recv(timeout=max(1.0, deadline - time.monotonic()))
            ids = batch.env_ids
            if clip is not None and grab is not None and not done[0] and (ids == 0).any():
                # One frame per observation of env 0: its first one, then one after every step (length + 1 frames).
                try:
                    clip.add(grab(0))
                except Exception as err:  # noqa: BLE001 - any renderer failure only turns videos off
                    clip.discard()
                    clip = None
                    self._video_off(f"{type(err).__name__}: {err}".splitlines()[0][:200])
            live = ~done[ids] & ~batch.first
            returns[ids[live]] += batch.score[live]  # the game's own score, not the clipped reward
            lengths[ids[live]] += 1
            done[ids[live & batch.game_over]] = True  # a whole game: a lost life (episodic_life) goes on
            if done.all():
                break
            if stop is not None and stop.is_set():
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation did not finish {n} episodes within {timeout:.0f} s")
            env.send(np.asarray(self._act(params, batch.obs)), ids)
        return {
            **_summary("eval/episode_return", returns),
            **_summary("eval/episode_length", lengths.astype(np.float64)),
        }

    def run_thread(
        self, lifetime: Lifetime, timers: Timers, take: Callable[[], Snapshot], first_due: int, interval: int,
        results: queue.Queue[EvalResult | EvalFailure], num_envs: int, steps: Callable[[], int],
    ) -> None:
        """The evaluator thread: evaluates `take()` (a copy of the newest learner state) whenever the run's env steps
        (`steps()`, polled cheaply: the copy is taken only when an evaluation is due) reach the next multiple of
        `interval`.

        The evaluator never holds back actors or learner: after an evaluation that outlasted `interval` env steps the
        next one starts at once, and the multiples it passed collapse into that one. Results go to `results` for the
        driver (metrics, best checkpoint, target).
        """
        stop = lifetime.stop_event
        self.warmup(self.algo.actor_params(take().state), num_envs)
        self._check_renderer()  # while the actors fill the replay, not when the first evaluation is due
        due = first_due
        while not stop.wait(POLL_S):
            if steps() < due:
                continue
            snapshot = take()
            with timers.span("eval/run"):
                self.busy_since = time.monotonic()
                try:
                    result: EvalResult | EvalFailure | None = self.evaluate(snapshot, stop=stop)
                except Exception as err:  # noqa: BLE001 - reported by the driver; training goes on
                    result = EvalFailure(snapshot.env_steps, one_line(err))
                finally:
                    self.busy_since = None
            if result is None:
                return
            due = next_multiple(snapshot.env_steps + 1, interval)
            while not stop.is_set():
                try:
                    results.put(result, timeout=0.1)
                    break
                except queue.Full:
                    continue


    def stuck(self) -> bool:
        """Whether the evaluator thread's evaluation has outlasted its timeout (and a grace): it hangs where the
        timeout does not reach."""
        since = self.busy_since
        return since is not None and time.monotonic() - since > self.timeout_s + GRACE_S


def evaluate_within(evaluator: Evaluator, snapshot: Snapshot, stop: threading.Event | None
                    ) -> EvalResult | EvalFailure | None:
    """`evaluator.evaluate` on a helper thread, waited for at most its timeout and a grace: the caller (the driver:
    serial mode's evaluations, the final one) goes on even when an env hangs. None if `stop` cut it short."""
    out: list[EvalResult | EvalFailure | None] = []

    def work() -> None:
        try:
            out.append(evaluator.evaluate(snapshot, stop=stop))
        except Exception as err:  # noqa: BLE001 - reported by the driver; training goes on
            out.append(EvalFailure(snapshot.env_steps, one_line(err)))

    thread = watch(threading.Thread(target=work, name="evaluation", daemon=True))
    thread.start()
    thread.join(evaluator.timeout_s + GRACE_S)
    if thread.is_alive():
        return EvalFailure(snapshot.env_steps, f"it did not return within {evaluator.timeout_s + GRACE_S:.0f} s",
                           hung=True)
    return out[0]


def one_line(err: BaseException) -> str:
    """`Type: message`, the message's first line (at most 300 characters)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def next_multiple(steps: int, interval: int) -> int:
    """The first multiple of `interval` at or above `steps` (never, for interval 0)."""
    if interval <= 0:
        return 1 << 62
    return -(-steps // interval) * interval


def _summary(name: str, values: np.ndarray) -> dict[str, float]:
    return {
        name: float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
    }
