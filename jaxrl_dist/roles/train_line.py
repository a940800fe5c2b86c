"""The driver's periodic metrics line of training: rates since the last line, the episodes finished since, the
learner's newest ready metrics and the roles' timers."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from jaxrl_dist.roles.graph import Graph
from jaxrl_dist.roles.resume import ready


class TrainLine:
    """Collects the actors' finished episodes between metrics lines and builds each line.

    Args:
        graph: the run's graph.
        steps: the run's env steps at its start (a resumed run's count).
    """

    def __init__(self, graph: Graph, steps: int) -> None:
        self.g = graph
        self.since = time.monotonic()
        self.steps, self.updates = steps, graph.limiter.updates
        self.returns: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.last_return: float | None = None  # of the newest finished training episode, for the progress display

    def collect(self) -> None:
        """Takes the episodes the actors finished since the last call."""
        for actor in self.g.actors:
            returns, lengths = actor.drain_episodes()
            if len(returns):
                self.returns.append(returns)
                self.lengths.append(lengths)
                self.last_return = float(returns[-1])

    def take(self, steps: int, now: float) -> dict[str, Any]:
        """The line at `steps` env steps and time `now` (`time.monotonic()`); the next one counts from here."""
        g = self.g
        dt = max(now - self.since, 1e-9)
        updates = g.limiter.updates
        record: dict[str, Any] = {
            "updates": updates, "sps": (steps - self.steps) / dt, "ups": (updates - self.updates) / dt,
            "train/epsilon": g.algo.exploration(steps), "replay/size": g.path.size(),
            "replay/prefetch_depth": g.path.queue.depth(), "params/version": g.store.version,
        }
        if self.returns:
            returns, lengths = np.concatenate(self.returns), np.concatenate(self.lengths)
            record.update({"train/episode_return": float(returns.mean()),
                           "train/episode_length": float(lengths.mean()), "train/episodes": len(returns)})
            self.returns, self.lengths = [], []
        metrics = g.learner.metrics  # a call in flight computes them: they come with a later line, not waited for
        if all(ready(v) for v in metrics.values()):
            record.update({f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()})
        record.update(g.timers.snapshot())
        self.since, self.steps, self.updates = now, steps, updates
        return record
