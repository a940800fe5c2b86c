"""The learner role: fused jitted updates over the batches its data path prepared, and the hand-off of each call's
parameters to the actors once they are computed.

A GPU runs every call asynchronously: the learner thread dispatches call n and goes on while the device computes.
Parameters that are still being computed must not reach the actors, whose next policy call would then wait for the
whole learner call. So after each dispatch the learner enqueues one copy of the actor parameters per actor device
(the learner state itself is donated to the next call) and the publisher hands a version to the `ParamStore` only
once its copies are ready; until then actors keep the previous version. At most `MAX_IN_FLIGHT` calls run ahead of
the published version, which keeps the version stamp (updates done) exact and `max_staleness` meaningful.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.distributed.fused import CallOutput, learner_call
from jaxrl_dist.distributed.group_sync import GroupSync
from jaxrl_dist.distributed.mesh import LearnerMesh
from jaxrl_dist.records import PriorityFeedback, Snapshot
from jaxrl_dist.roles.lifetime import Lifetime, Timers
from jaxrl_dist.roles.sampler import BatchQueue
from jaxrl_dist.roles.sync import Limiter, ParamStore

MAX_IN_FLIGHT = 2  # learner calls dispatched whose parameters are not yet published


def copy_tree(tree: Any, device: Any = None) -> Any:
    """A copy of a pytree of device arrays, on `device` (None: where each leaf is); asynchronous, so it is taken
    after any computation still writing the leaves, and survives their donation to a later call."""
    if device is None:
        return jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), tree)
    return jax.device_put(tree, device, may_alias=False)


class Publisher:
    """Publishes learner parameters to the `ParamStore` once they are computed, one copy per actor device (where the
    learner donates its state, or the device is another: on a CPU learner's own device, the arrays themselves).

    `hand` is called by the learner thread right after it dispatched a call. In serial mode it publishes at once
    (waiting for the copies); otherwise the publisher thread (`run`) waits for them, in order, while the learner
    dispatches on. `hand` blocks while `MAX_IN_FLIGHT` versions wait, so the learner never runs further ahead.

    Args:
        store: the parameter store actors read.
        devices: the actor devices (each gets one copy per version, shared by its actor threads).
        inline: publish in the caller's thread (serial mode).
    """

    def __init__(self, store: ParamStore, devices: list[Any], inline: bool = False) -> None:
        self.store, self.devices, self.inline = store, list(dict.fromkeys(devices)), inline
        self.copies = True  # a copy per version: the learner donates its state (`Learner` sets it)
        self._queue: queue.Queue[tuple[dict[Any, Any], int]] = queue.Queue(maxsize=MAX_IN_FLIGHT)

    def hand(self, params: Any, version: int, stop: threading.Event | None = None) -> None:
        """Enqueues `params` (this process's actor parameters, possibly still being computed) as `version`."""
        put = copy_tree if self.copies else jax.device_put  # device_put: the arrays themselves where they are
        copies = {device: put(params, device) for device in self.devices}
        if self.inline or (self._queue.empty() and all(x.is_ready() for x in jax.tree.leaves(list(copies.values())))):
            jax.block_until_ready(list(copies.values()))
            self.store.publish(copies, version)
            return
        while not self._put((copies, version)):
            if stop is not None and stop.is_set():
                return

    def _put(self, item: tuple[dict[Any, Any], int]) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def run(self, lifetime: Lifetime) -> None:
        """The publisher thread: publishes each handed version once its copies are computed."""
        stop = lifetime.stop_event
        while not stop.is_set():
            try:
                copies, version = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            jax.block_until_ready(list(copies.values()))  # only this thread waits for the learner's call
            self.store.publish(copies, version)


class Learner:
    """Owns the learner state, which each call donates to the next (one copy on the device). Other threads read it
    through `read_snapshot`, a copy taken between calls.

    Args:
        algo: the algorithm's pure functions.
        state: the initial learner state on the learner devices (`install` replaces it).
        updates_per_call: K, the updates fused into one call.
        publisher: hands parameters to the actors once computed.
        limiter: the data path's limiter.
        placement: the learner devices (state replicated, batches split); None for one device, where `state` is.
            On several devices `algo` must have been built with `placement.grad_reduce`.
        sync: the collectives with the other groups (None without groups); `algo` must have been built with
            its `GroupMean` for `sync: grads`.
        feedback: prioritized replay: where each call's `PriorityFeedback` (device arrays) goes, handed over without
            waiting for them (None: no priorities).
    """

    def __init__(self, algo: Algorithm, state: Any, updates_per_call: int, publisher: Publisher, limiter: Limiter,
                 placement: LearnerMesh | None = None, sync: GroupSync | None = None,
                 feedback: Callable[[PriorityFeedback], None] | None = None):
        self.algo, self.k, self.publisher = algo, updates_per_call, publisher
        self.limiter, self.placement, self.sync, self.feedback = limiter, placement, sync, feedback
        self._update = learner_call(algo.update, placement, prioritized=feedback is not None)
        # Without donation (CPU learners) a state stays valid after the next call: readers and the hand-off need
        # no copies of it.
        self.donates: bool = self._update.donates  # type: ignore[attr-defined]
        publisher.copies = self.donates
        # Device scalars of the newest call whose metrics are computed, and of the newest call (maybe in flight).
        self._ready_metrics: dict[str, jax.Array] = {}
        self._pending_metrics: dict[str, jax.Array] = {}
        # The state and its update count change together under this lock: a reader's copy is never of a state
        # that a call has donated meanwhile.
        self._state_lock = threading.Lock()
        self.state, self.updates = state, limiter.updates
        self._abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        # One warm-up at a time, and none again once done: a precompile thread and the learner thread may both ask
        # (two sharded calls in flight at once can deadlock XLA:CPU's fake devices).
        self._warm_lock, self._warmed = threading.Lock(), False

    @property
    def metrics(self) -> dict[str, jax.Array]:
        """The metrics of the newest learner call that has finished (never waits for one in flight: with
        asynchronous dispatch the newest call's are still being computed when the driver logs)."""
        self._take_ready_metrics()
        return self._ready_metrics

    def _take_ready_metrics(self) -> None:
        pending = self._pending_metrics
        if pending and all(x.is_ready() for x in pending.values()):  # type: ignore[attr-defined]
            self._ready_metrics = pending

    def install(self, state: Any, updates: int) -> None:
        """Makes a copy of `state` (on the learner devices) the learner's, with `updates` done, and publishes its
        parameters (the initial or a restored state; before the roles start). The copy gives every leaf a buffer of
        its own: a state whose leaves share one (DQN's target starts as its parameters) cannot be donated."""
        state = copy_tree(state)
        with self._state_lock:
            self.state, self.updates = state, updates
        copies = {device: copy_tree(self.algo.actor_params(self._local(state)), device)
                  for device in self.publisher.devices}
        jax.block_until_ready(list(copies.values()))
        self.publisher.store.publish(copies, updates)

    def read_snapshot(self, env_steps: int = 0, timeout: float = 600.0) -> Snapshot:
        """A copy of the newest learner state (this process's) with its update count, safe to keep while the learner
        goes on; waits for a learner call being dispatched (not for its computation). `env_steps` labels it.

        Raises:
            TimeoutError: The learner held its state for `timeout` seconds (a call that blocks, as on CPU).
        """
        if not self._state_lock.acquire(timeout=timeout):
            raise TimeoutError(f"the learner's call did not finish within {timeout:g} s")
        try:
            state = self._local(self.state)
            return Snapshot(env_steps, self.updates, copy_tree(state) if self.donates else state)
        finally:
            self._state_lock.release()

    def train_call(self, batches: Any, timers: Timers, stop: threading.Event | None = None) -> bool:
        """K updates on `batches` (`[K, B, ...]` on the learner device), then the parameters' hand-off. False, with
        nothing done, where the groups agreed to stop instead."""
        if not self._warmed:
            with self._warm_lock:  # a warm-up in flight on another thread finishes first
                pass
        sync = self.sync
        if sync is not None:
            with timers.span("group/stop_exchange"):
                if not sync.before_call():
                    return False
        with timers.span("learner/update"):
            with self._state_lock:
                if sync is None:
                    out: CallOutput = self._update(self.state, batches)
                else:
                    out = sync.call(self._update, self.state, batches)
                self._take_ready_metrics()
                self.state, self.updates, self._pending_metrics = out.state, self.updates + self.k, out.metrics
        if sync is not None:
            with timers.span("group/params_average"):
                averaged = sync.after_call(self.state, self.updates)
                with self._state_lock:
                    self.state = averaged
        if self.feedback is not None:  # the new priorities go back to the replay's sampler
            self.feedback(PriorityFeedback(batches.index, out.priority))
        with timers.span("learner/publish"):
            self.publisher.hand(self.algo.actor_params(self._local(self.state)), self.updates, stop)
        self.limiter.add_updates(self.k)
        return True

    def _local(self, state: Any) -> Any:
        """The state as this process reads it (its own copy where the mesh spans processes)."""
        return state if self.placement is None else self.placement.local(state)

    def leave(self) -> None:
        """The learner's work ends: with groups, the last sync point if the others do not know yet (see
        `GroupSync.leave`)."""
        if self.sync is not None:
            with self._state_lock:
                self.state = self.sync.leave(self.state, self.updates)
            self.sync.compare(self._local(self.state))

    def warmup(self, batches: Any) -> None:
        """Compiles the update on a batch of the right shapes (on a state of zeros, result discarded), while actors
        fill the replay; a second call (or one after a precompile thread's) does nothing. With groups every group
        warms up once, so its gradient allreduce is matched, and so is the parameter average that
        `GroupSync.warmup` compiles."""
        with self._warm_lock:
            if self._warmed:
                return
            # Host zeros, copied where the state lives: `jnp.zeros` would compile a program per leaf shape (a
            # second or more of a CPU run's start, before the update itself could compile).
            host = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), self._abstract)
            zeros = (jax.device_put(host, jax.tree.map(lambda x: x.sharding, self._abstract))
                     if self.placement is None else self.placement.put_replicated(host))
            if self.sync is not None:
                self.sync.meet("start-up of the groups")
                self.sync.call(self._update, zeros, batches)
                with self._state_lock:
                    self.sync.warmup(self.state)
            else:
                jax.block_until_ready(self._update(zeros, batches))
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
            self.train_call(batches, timers, stop)
