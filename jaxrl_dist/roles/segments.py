"""The on-policy data path: actors cut fixed-length trajectory segments and hand them to the learner, no replay.

```
actor: recv -> act -> SegmentBuilder row t -> send       (T + 1 rows [N, T + 1, ...]; row T is the next row 0)
  full segment -> device_put to the learner devices, split along envs (async copy, while the learner trains)
  -> SegmentQueue (bounded) -> learner: one update per segment -> ParamStore version + 1
```

Staleness is counted in segments (one learner update each). A `SegmentFeed` changes its actor's parameters only
between segments: the segment after segment s (counting every actor's segments) is collected with version
`s + 1 - max_staleness`. With `max_staleness: 1` the actor takes version s (trained on segments 0..s-1) *before*
handing segment s over, so it collects segment s + 1 while the learner trains on segment s: a deterministic one-step
lag. With `0` it hands segment s over first and waits for the update on it (fully synchronous). Every wait has a
timeout; the caller retries while the run goes on.
"""

from __future__ import annotations

import queue
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.algos.base import Segment
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.replay.prefetch import Prefetcher
from jaxrl_dist.roles.lifetime import Timers
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter


def segment_arrays(spec: EnvSpec, record: Any, num_envs: int, length: int, lead: tuple[int, ...] = ()) -> Segment:
    """A `Segment` of zeros `[*lead, num_envs, length + 1, ...]`; `record` gives the shapes `[B, ...]` and dtypes
    of what `act` returns (`jax.ShapeDtypeStruct` leaves, e.g. from `jax.eval_shape`)."""
    shape = (*lead, num_envs, length + 1)

    def flags() -> np.ndarray:
        return np.zeros(shape, bool)

    policy = jax.tree.map(lambda x: np.zeros((*shape, *x.shape[1:]), x.dtype), record)
    return Segment(np.zeros((*shape, *spec.obs_shape), spec.obs_dtype), np.zeros(shape, np.float32), flags(),
                   flags(), flags(), policy)


class SegmentLimiter(RatioLimiter):
    """The learner runs one update per segment handed over; actors are paced by their parameter versions (see
    `SegmentFeed`), not by a replay ratio. `segments` counts the segments handed over (from the resume point's
    update count), so `updates < segments` means one is waiting."""

    def __init__(self, env_steps: int = 0, updates: int = 0, actors: int = 1) -> None:
        super().__init__(1.0, 0, 0, env_steps, updates, actors)
        self.segments = updates

    def allowed_updates(self) -> int:
        return self.segments

    def actor_may_run(self) -> bool:
        return True

    def add_segment(self) -> None:
        with self._cond:
            self.segments += 1
            self._cond.notify_all()


class SegmentQueue(Prefetcher):
    """The bounded queue of segments already on the learner devices: the learner's feed in place of the replay
    sampler (`get`; `produce` in serial mode), with the replay's `size` and checkpoint hooks."""

    def __init__(self, depth: int) -> None:  # noqa: D107  # nothing of the sampler's but its queue
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def put(self, segment: Segment, timeout: float) -> bool:
        """False when the queue stayed full for `timeout` seconds (0: do not wait)."""
        try:
            self._queue.put(segment, block=timeout > 0, timeout=timeout if timeout > 0 else None)
            return True
        except queue.Full:
            return False

    def produce(self) -> Segment:
        """The next segment, which must be there (serial mode trains what the actor just handed over)."""
        return self._queue.get_nowait()

    def run(self) -> None:
        """No sampler thread: actors put segments on the devices themselves."""

    def size(self) -> int:
        return self._queue.qsize()

    def state_dict(self) -> dict[str, Any]:
        return {}  # on-policy data is not worth keeping: a resumed run collects with its restored policy

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SegmentFeed:
    """One actor's side of the segment path: builds `[N, T + 1]` rows, moves full segments to the learner devices
    and hands them over, and says when the actor may take which parameters.

    Args:
        spec: the env spec.
        record: shapes and dtypes of one `act` result `[N, ...]` (`jax.ShapeDtypeStruct` leaves).
        num_envs: the actor's envs N (every recv returns all of them).
        length: T, env steps per segment.
        out: where segments go (`SegmentQueue`).
        limiter: counts segments handed over.
        store: the learner's parameter store.
        placement: the sharding of learner batches `[K, B, ...]` (`LearnerMesh.batches`), or a function that puts
            them (`LearnerMesh.put_batches`): segments get K = 1.
        max_staleness: segments the parameters may lag (0: synchronous; 1: a deterministic one-segment lag).
    """

    def __init__(self, spec: EnvSpec, record: Any, num_envs: int, length: int, out: SegmentQueue,
                 limiter: SegmentLimiter, store: ParamStore, placement: Any, max_staleness: int) -> None:
        self.spec, self.record, self.num_envs, self.length = spec, record, num_envs, length
        self.out, self.limiter, self.store, self.placement = out, limiter, store, placement
        self.staleness = max_staleness
        self.rows = segment_arrays(spec, record, num_envs, length)
        self.t = 0  # the next row to write
        self.completed = 0  # segments this actor filled
        self.held: Segment | None = None  # a full segment not yet handed over
        self.need: int | None = limiter.segments - max_staleness  # the version to take before the next row

    def write(self, batch: Any, record: Any, timers: Timers) -> None:
        """Row t: a recv batch (all N envs, in any order) and what `act` returned for it (host arrays)."""
        rows, t, ids = self.rows, self.t, batch.env_ids
        rows.obs[ids, t], rows.reward[ids, t] = batch.obs, batch.reward
        rows.terminated[ids, t], rows.truncated[ids, t] = batch.terminated, batch.truncated
        rows.first[ids, t] = batch.first
        for buf, x in zip(jax.tree.leaves(rows.policy), jax.tree.leaves(record)):
            buf[ids, t] = x
        self.t += 1
        if self.t <= self.length:
            return
        # The bootstrap row T starts the next segment; fresh buffers, since the device copy may still read these.
        self.rows = segment_arrays(self.spec, self.record, self.num_envs, self.length)
        for new, old in zip(jax.tree.leaves(self.rows), jax.tree.leaves(rows)):
            new[:, 0] = old[:, -1]
        self.t, self.completed = 1, self.completed + 1
        with timers.span("actor/segment_h2d"):
            lead = jax.tree.map(lambda x: x[None], rows)
            # A put function where the learner mesh spans processes (`LearnerMesh.put_batches`), else a sharding.
            self.held = self.placement(lead) if callable(self.placement) else jax.device_put(lead, self.placement)
        if self.staleness == 0:
            self._hand_over(0.0)
        else:
            self.need = self.limiter.segments + 1 - self.staleness

    def refresh(self, take: Callable[[], None], timeout: float) -> bool:
        """Before each env round: hands over a held segment and takes the parameters the next rows need, in the
        order `max_staleness` asks for. `take()` takes the store's newest. False when a wait timed out."""
        if self.held is not None and self.staleness == 0 and not self._hand_over(timeout):
            return False
        if self.need is not None:
            if not self.store.wait_newer(self.need, timeout):
                return False
            take()
            self.need = None
        return self.held is None or self._hand_over(timeout)

    def _hand_over(self, timeout: float) -> bool:
        assert self.held is not None
        if not self.out.put(self.held, timeout):
            return False
        self.held = None
        self.limiter.add_segment()
        if self.staleness == 0:
            self.need = self.limiter.segments  # the update on this segment (and on any handed over before it)
        return True
