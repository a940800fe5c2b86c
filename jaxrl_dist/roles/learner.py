"""The learner role: fused jitted updates over the batches its data path prepared, publishing parameters after each
call."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import jax

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.distributed.fused import CallOutput, learner_call
from jaxrl_dist.distributed.group_sync import GroupSync
from jaxrl_dist.distributed.mesh import LearnerMesh
from jaxrl_dist.records import PriorityFeedback, Snapshot
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sampler import BatchQueue
from jaxrl_dist.roles.sync import Limiter, ParamStore


class Learner:
    """Owns the learner state. `state` is swapped whole after each call, and `snapshot` (a `Snapshot` of this
    process's copy with its update count) with it, so other threads read a consistent one.

    Args:
        algo: the algorithm's pure functions.
        state: the initial (or restored) learner state, on the learner device (`install` replaces it).
        updates_per_call: K, the updates fused into one call.
        store: where parameters are published for actors and the evaluator.
        limiter: the data path's limiter.
        placement: the learner devices (state replicated, batches split); None for one device, where `state` is.
            On several devices `algo` must have been built with `placement.grad_reduce`.
        sync: the collectives with the other groups (None without groups); `algo` must have been built with
            its `GroupMean` for `sync: grads`.
        feedback: prioritized replay: where each call's `PriorityFeedback` (device arrays) goes, handed over without
            waiting for them (None: no priorities).
    """

    def __init__(self, algo: Algorithm, state: Any, updates_per_call: int, store: ParamStore, limiter: Limiter,
                 placement: LearnerMesh | None = None, sync: GroupSync | None = None,
                 feedback: Callable[[PriorityFeedback], None] | None = None):
        self.algo, self.state, self.k = algo, state, updates_per_call
        self.store, self.limiter = store, limiter
        self.placement, self.sync = placement, sync
        self.feedback = feedback
        self._update = learner_call(algo.update, placement, prioritized=feedback is not None)
        self.metrics: dict[str, jax.Array] = {}  # device scalars of the last call; read only when logging
        self.snapshot = Snapshot(limiter.total_steps, limiter.updates, self._local(state))
        # One warm-up at a time, and none again once done: a precompile thread and the learner thread may both ask
        # (two sharded calls in flight at once can deadlock XLA:CPU's fake devices).
        self._warm_lock, self._warmed = threading.Lock(), False

    def install(self, state: Any, updates: int) -> None:
        """Makes `state` (on the learner devices) the learner's, with `updates` done, and publishes its parameters:
        the initial or restored state."""
        self.state = state
        self.snapshot = Snapshot(self.limiter.total_steps, updates, self._local(state))
        self.store.publish(self.algo.actor_params(self.snapshot.state), updates)

    def train_call(self, batches: Any, timers: Timers) -> bool:
        """K updates on `batches` (`[K, B, ...]` on the learner device), then publish. False, with nothing done,
        where the groups agreed to stop instead."""
        if not self._warmed:
            with self._warm_lock:  # a warm-up in flight on another thread finishes first
                pass
        sync = self.sync
        out: CallOutput
        if sync is None:
            with timers.span("learner/update"):
                out = self._update(self.state, batches)
        else:
            with timers.span("group/stop_exchange"):
                if not sync.before_call():
                    return False
            with timers.span("learner/update"):
                out = sync.call(self._update, self.state, batches)
        self.state, self.metrics = out.state, out.metrics
        if sync is not None:
            with timers.span("group/params_average"):
                self.state = sync.after_call(self.state, self.limiter.updates + self.k)
        if self.feedback is not None:  # the new priorities go back to the replay's sampler
            self.feedback(PriorityFeedback(batches.index, out.priority))
        self.limiter.add_updates(self.k)
        self.snapshot = Snapshot(self.limiter.total_steps, self.limiter.updates, self._local(self.state))
        with timers.span("learner/publish"):
            self.store.publish(self.algo.actor_params(self.snapshot.state), self.limiter.updates)
        return True

    def _local(self, state: Any) -> Any:
        """The state as this process reads it (its own copy where the mesh spans processes)."""
        return state if self.placement is None else self.placement.local(state)

    def leave(self) -> None:
        """The learner's work ends: with groups, the last sync point if the others do not know yet (see
        `GroupSync.leave`)."""
        if self.sync is not None:
            self.state = self.sync.leave(self.state, self.limiter.updates)
            self.snapshot = Snapshot(self.limiter.total_steps, self.limiter.updates, self._local(self.state))
            self.sync.compare(self.snapshot.state)

    def warmup(self, batches: Any) -> None:
        """Compiles the update on a batch of the right shapes (result discarded), while actors fill the replay; a
        second call (or one after a precompile thread's) does nothing. With groups every group warms up once, so
        its gradient allreduce is matched, and so is the parameter average that `GroupSync.warmup` compiles."""
        with self._warm_lock:
            if self._warmed:
                return
            if self.sync is not None:
                self.sync.meet("start-up of the groups")
                self.sync.call(self._update, self.state, batches)
                self.sync.warmup(self.state)
            else:
                jax.block_until_ready(self._update(self.state, batches))
            self._warmed = True

    def run(self, lifetime: Lifetime, timers: Timers, source: BatchQueue, warmup: Any = None) -> None:
        """The learner thread's loop: trains while the limiter allows, until the actors finished and it caught up.

        Args:
            lifetime: the run's lifetime.
            timers: per-stage timers.
            source: the data path's queue of prepared batches.
            warmup: zero batches to compile the update on first (None: no warm-up).
        """
        if warmup is not None:
            with timers.span("learner/compile"):
                self.warmup(warmup)
        self._loop(lifetime, timers, source)
        self.leave()  # not after an error: the run's abort ends the other groups

    def _loop(self, lifetime: Lifetime, timers: Timers, source: BatchQueue) -> None:
        stop, limiter, k = lifetime.stop_event, self.limiter, self.k
        while not stop.is_set():
            if not limiter.learner_may_run(k):
                if limiter.finished:
                    return  # the actors are done and every update the ratio allows has run
                limiter.wait(lambda: limiter.learner_may_run(k) or limiter.finished or stop.is_set(), timeout=0.1)
                continue
            try:
                with timers.span("learner/batch_wait"):
                    batches = source.get(timeout=0.1)
            except queue.Empty:
                continue
            self.train_call(batches, timers)
