"""The learner's feed: a bounded queue of batches already on the learner devices, and the sampler role that fills it
from the replay (batch k+1 is drawn and copied to the devices while the learner trains on batch k)."""

from __future__ import annotations

import queue
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.roles.lifetime import Lifetime, Timers


class BatchQueue:
    """Batches (or segments) on the learner devices, in the order they were put, at most `depth` at a time.

    Every wait has a timeout, so neither side can hang a stopping run.
    """

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def put(self, item: Any, timeout: float) -> bool:
        """False when the queue stayed full for `timeout` seconds (0: do not wait)."""
        try:
            self._queue.put(item, block=timeout > 0, timeout=timeout if timeout > 0 else None)
            return True
        except queue.Full:
            return False

    def get(self, timeout: float) -> Any:
        """The next item; raises `queue.Empty` after `timeout` seconds."""
        return self._queue.get(timeout=timeout)

    def get_nowait(self) -> Any:
        """The next item, which must be there (serial mode)."""
        return self._queue.get_nowait()

    def depth(self) -> int:
        return self._queue.qsize()


class Sampler:
    """The sampler role: draws stacked batches from the replay and moves them to the learner devices ahead of use.

    On an accelerator each sampler gathers into staging buffers of its own, allocated once and reused for every
    call (no allocation, no page faults, no temporary of the batch's size), copies them to the devices with
    `device_put` and waits for that transfer (JAX reads the host arrays in the background) before it reuses them:
    the transfer runs while the learner trains on the previous batch, so with `depth` batches in the queue the copy
    of the next batch overlaps the update on the current one. On CPU devices a batch is gathered into fresh arrays
    that the device uses in place: XLA:CPU may alias host memory even when asked for a copy, which would let the
    next gather change a batch already handed over. Several samplers (`replay.samplers`) share one queue where one
    thread cannot keep a fast learner fed.

    Args:
        sample: `(rng, out) -> batch`, one learner call's batches (`[K, B, ...]`) gathered into `out` (None: new
            arrays).
        ready: `() -> bool`, whether the replay holds enough items to sample.
        placement: a `jax.sharding.Sharding` the batches go to, or a function that puts them.
        out: the learner's queue.
        lifetime: the run's lifetime (stop flag, error reporting).
        timers: per-stage timers of the run.
        rng: this sampler's generator.
        staging: this sampler's host buffers, shaped like one call's batches; None: fresh arrays per call.
    """

    def __init__(self, sample: Callable[[np.random.Generator, Any], Any], ready: Callable[[], bool], placement: Any,
                 out: BatchQueue, lifetime: Lifetime, timers: Timers, rng: np.random.Generator,
                 staging: Any = None) -> None:
        self._sample, self._ready, self._placement = sample, ready, placement
        self.out, self._lifetime, self._timers = out, lifetime, timers
        self.rng, self.staging = rng, staging
        devices = getattr(placement, "device_set", ())
        self._host_memory = any(d.platform == "cpu" for d in devices)

    def produce(self) -> Any:
        """One batch on the device (used directly in serial mode)."""
        with self._timers.span("replay/sample"):
            host = self._sample(self.rng, self.staging)
        with self._timers.span("replay/h2d"):
            if callable(self._placement):  # a put function (`LearnerMesh.put_batches`): it may keep the host arrays
                return self._placement(host if self.staging is None else jax.tree.map(np.copy, host))
            if self.staging is None:
                return jax.device_put(host, self._placement)
            if self._host_memory:  # staging on CPU devices: a copy the device may keep (see the class docstring)
                host = jax.tree.map(np.copy, host)
            return jax.block_until_ready(jax.device_put(host, self._placement, may_alias=False))

    def run(self) -> None:
        """The sampler thread's loop (started by the runner through `Lifetime.spawn`)."""
        stop = self._lifetime.stop_event
        while not stop.is_set():
            if not self._ready():
                stop.wait(0.005)
                continue
            batch = self.produce()
            while not stop.is_set() and not self.out.put(batch, timeout=0.1):
                pass
