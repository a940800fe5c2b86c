"""The sampler role: prepares batch k+1 on the learner's device while the learner trains on batch k."""

from __future__ import annotations

import queue
from typing import Any, Callable

import jax

from jaxrl_dist.roles.lifetime import Lifetime, Timers


class Prefetcher:
    """Samples stacked batches on a thread and moves them to the learner device ahead of use.

    `jax.device_put` returns at once and copies in the background, so with `depth` batches in the queue the
    host-to-device copy of the next batch overlaps the update on the current one (double buffering for depth 2).

    Args:
        sample: `() -> pytree of numpy arrays`, one learner call's worth of batches (`[K, B, ...]`).
        ready: `() -> bool`, whether the replay holds enough items to sample.
        placement: a `jax.Device` or `jax.sharding.Sharding` the batches go to, or a function that puts them.
        depth: batches kept ready.
        lifetime: the run's lifetime (stop flag, error reporting).
        timers: per-stage timers of the run.
    """

    def __init__(
        self,
        sample: Callable[[], Any],
        ready: Callable[[], bool],
        placement: Any,
        depth: int,
        lifetime: Lifetime,
        timers: Timers,
    ) -> None:
        self._sample, self._ready, self._placement = sample, ready, placement
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._lifetime, self._timers = lifetime, timers

    def produce(self) -> Any:
        """One batch on the device (used directly in serial mode)."""
        with self._timers.span("replay/sample"):
            host = self._sample()
        with self._timers.span("replay/h2d"):
            if callable(self._placement):  # a put function (`LearnerMesh.put_batches`)
                return self._placement(host)
            return jax.device_put(host, self._placement)

    def run(self) -> None:
        """The sampler thread's loop (started by the runner through `Lifetime.spawn`)."""
        stop = self._lifetime.stop_event
        while not stop.is_set():
            if not self._ready():
                stop.wait(0.005)
                continue
            batch = self.produce()
            while not stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self, timeout: float) -> Any:
        """The next prepared batch; raises `queue.Empty` after `timeout` seconds."""
        return self._queue.get(timeout=timeout)

    def depth(self) -> int:
        return self._queue.qsize()
