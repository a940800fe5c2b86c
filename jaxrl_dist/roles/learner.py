"""The learner role: fused jitted updates over prefetched batches, publishing parameters after each call."""

from __future__ import annotations

import queue
from typing import Any, Callable

import jax

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.distributed.group_sync import GroupSync
from jaxrl_dist.distributed.mesh import LearnerMesh, fused_update
from jaxrl_dist.replay.feedback import PRIORITY, fused_with_priorities
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
        sync: the collectives with the other groups (None without groups); `algo` must have been built with
            its `GroupMean` for `sync: grads`.
        feedback: prioritized replay: `(index [K, B, 2], |td| [K, B])` device arrays after each call, handed back
            without waiting for them (None: uniform replay).
    """

    def __init__(self, algo: Algorithm, state: Any, updates_per_call: int, store: ParamStore, limiter: RatioLimiter,
                 placement: LearnerMesh | None = None, sync: GroupSync | None = None,
                 feedback: Callable[[Any, Any], None] | None = None):
        self.algo, self.state, self.k = algo, state, updates_per_call
        self.store, self.limiter = store, limiter
        self.placement, self.sync = placement, sync
        self.feedback = feedback
        self._update = (fused_update(algo.update, placement) if feedback is None
                        else fused_with_priorities(algo.update, placement))
        self.metrics: dict[str, jax.Array] = {}  # device scalars of the last call; read only when logging
        # (state, updates done), swapped as one tuple for other threads
        self.snapshot = (self._local(state), limiter.updates)

    def train_call(self, batches: Any, timers: Timers) -> bool:
        """K updates on `batches` (`[K, B, ...]` on the learner device), then publish. False, with nothing done,
        where the groups agreed to stop instead."""
        sync = self.sync
        if sync is None:
            with timers.span("learner/update"):
                self.state, self.metrics = self._update(self.state, batches)
        else:
            with timers.span("group/stop_exchange"):
                if not sync.before_call():
                    return False
            with timers.span("learner/update"):
                self.state, self.metrics = sync.call(self._update, self.state, batches)
            with timers.span("group/params_average"):
                self.state = sync.after_call(self.state, self.limiter.updates + self.k)
        if self.feedback is not None:  # the new priorities go back to the replay's sampler
            self.metrics = dict(self.metrics)
            self.feedback(batches.index, self.metrics.pop(PRIORITY))
        self.limiter.add_updates(self.k)
        local = self._local(self.state)
        self.snapshot = (local, self.limiter.updates)
        with timers.span("learner/publish"):
            self.store.publish(self.algo.actor_params(local), self.limiter.updates)
        return True

    def _local(self, state: Any) -> Any:
        """The state as this process reads it (its own copy where the mesh spans processes)."""
        return state if self.placement is None else self.placement.local(state)

    def leave(self) -> None:
        """The learner's work ends: with groups, the last sync point if the others do not know yet (see
        `GroupSync.leave`)."""
        if self.sync is not None:
            self.state = self.sync.leave(self.state, self.limiter.updates)
            self.snapshot = (self._local(self.state), self.limiter.updates)
            self.sync.compare(self.snapshot[0])

    def warmup(self, batches: Any) -> None:
        """Compiles the update on a batch of the right shapes (result discarded), while actors fill the replay.
        With groups every group warms up once, so its gradient allreduce is matched, and so is the parameter
        average that `GroupSync.warmup` compiles."""
        if self.sync is not None:
            self.sync.meet("start-up of the groups")
            self.sync.call(self._update, self.state, batches)
            self.sync.warmup(self.state)
        else:
            jax.block_until_ready(self._update(self.state, batches))

    def run(self, lifetime: Lifetime, timers: Timers, prefetch: Prefetcher, warmup: Any = None) -> None:
        """The learner thread's loop: trains while the ratio allows, until the actors finished and it caught up."""
        if warmup is not None:
            with timers.span("learner/compile"):
                self.warmup(warmup)
        self._loop(lifetime, timers, prefetch)
        self.leave()  # not after an error: the run's abort ends the other groups

    def _loop(self, lifetime: Lifetime, timers: Timers, prefetch: Prefetcher) -> None:
        stop, limiter, k = lifetime.stop_event, self.limiter, self.k
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
