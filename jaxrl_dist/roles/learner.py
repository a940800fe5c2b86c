"""The learner role: fused jitted updates over prefetched batches, publishing parameters after each call."""

from __future__ import annotations

import queue
from typing import Any

import jax

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.distributed.mesh import LearnerMesh, fused_update
from jaxrl_dist.replay.prefetch import Prefetcher
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter


class Learner:
    """Owns the learner state. `state` is swapped whole after each call, so other threads read a consistent one.

    Args:
        algo: the algorithm's pure functions.
        state: the initial (or restored) learner state, on the learner device.
        updates_per_call: K, the updates fused into one call.
        store: where parameters are published for actors and the evaluator.
        limiter: the replay-ratio limiter.
        placement: the learner devices (state replicated, batches split); None for one device, where `state` is.
            On several devices `algo` must have been built with `placement.grad_reduce`.
    """

    def __init__(self, algo: Algorithm, state: Any, updates_per_call: int, store: ParamStore, limiter: RatioLimiter,
                 placement: LearnerMesh | None = None):
        self.algo, self.state, self.k = algo, state, updates_per_call
        self.store, self.limiter = store, limiter
        self.placement = placement
        self._update = fused_update(algo.update, placement)
        self.metrics: dict[str, jax.Array] = {}  # device scalars of the last call; read only when logging
        self.snapshot = (state, limiter.updates)  # (state, updates done), swapped as one tuple for other threads

    def train_call(self, batches: Any, timers: Timers) -> None:
        """K updates on `batches` (`[K, B, ...]` on the learner device), then publish."""
        with timers.span("learner/update"):
            self.state, self.metrics = self._update(self.state, batches)
        self.limiter.add_updates(self.k)
        self.snapshot = (self.state, self.limiter.updates)
        with timers.span("learner/publish"):
            self.store.publish(self.algo.actor_params(self.state), self.limiter.updates)

    def warmup(self, batches: Any) -> None:
        """Compiles the update on a batch of the right shapes (result discarded), while actors fill the replay."""
        jax.block_until_ready(self._update(self.state, batches))

    def run(self, lifetime: Lifetime, timers: Timers, prefetch: Prefetcher, warmup: Any = None) -> None:
        """The learner thread's loop: trains while the ratio allows, until the actors finished and it caught up."""
        stop, limiter, k = lifetime.stop_event, self.limiter, self.k
        if warmup is not None:
            with timers.span("learner/compile"):
                self.warmup(warmup)
        while not stop.is_set():
            if not limiter.learner_may_run(k):
                if limiter.finished:
                    return  # the actors are done and every update the ratio allows has run
                limiter.wait(lambda: limiter.learner_may_run(k) or limiter.finished or stop.is_set(), timeout=0.1)
                continue
            try:
                with timers.span("learner/batch_wait"):
                    batches = prefetch.get(timeout=0.1)
            except queue.Empty:
                continue
            self.train_call(batches, timers)
