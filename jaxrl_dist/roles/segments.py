"""The on-policy data path (`AlgorithmDef.data == "segments"`): actors cut fixed-length trajectory segments and
hand them to the learner, no replay, no sampler.

```
actor: recv -> act -> send -> SegmentFeed row t     (T + 1 rows [N, T + 1, ...]; row T is the next row 0)
  full segment -> device_put to the learner devices, split along envs (async copy, while the learner trains)
  -> BatchQueue (bounded) -> learner: one update per segment -> ParamStore version + 1
```

Staleness is counted in segments (one learner update each). A `SegmentFeed` changes its actor's parameters only
between segments: the segment after segment s (counting every actor's segments) is collected with version
`s + 1 - max_staleness`. With `max_staleness: 1` the actor takes version s (trained on segments 0..s-1) *before*
handing segment s over, so it collects segment s + 1 while the learner trains on segment s: a deterministic one-step
lag. With `0` it hands segment s over first and waits for the update on it (fully synchronous). Every wait has a
timeout; the caller retries while the run goes on.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.envs import EnvSpec, StepBatch, VecEnv
from jaxrl_dist.records import Segment
from jaxrl_dist.roles.datapath import PathInputs
from jaxrl_dist.roles.lifetime import Timers
from jaxrl_dist.roles.sampler import BatchQueue
from jaxrl_dist.roles.sync import Counters, ParamStore, SegmentLimiter


def segment_arrays(spec: EnvSpec, record: Any, num_envs: int, length: int, lead: tuple[int, ...] = ()) -> Segment:
    """A `Segment` of zeros `[*lead, num_envs, length + 1, ...]`; `record` gives the shapes `[B, ...]` and dtypes
    of what `act` returns (`jax.ShapeDtypeStruct` leaves, e.g. from `jax.eval_shape`)."""
    shape = (*lead, num_envs, length + 1)

    def flags() -> np.ndarray:
        return np.zeros(shape, bool)

    policy = jax.tree.map(lambda x: np.zeros((*shape, *x.shape[1:]), x.dtype), record)
    return Segment(np.zeros((*shape, *spec.obs_shape), spec.obs_dtype), np.zeros(shape, np.float32), flags(),
                   flags(), flags(), policy)


class SegmentFeed:
    """One actor's side of the segment path: builds `[N, T + 1]` rows, moves full segments to the learner devices
    and hands them over, and says when the actor may take which parameters.

    Args:
        spec: the env spec.
        record: shapes and dtypes of one `act` result `[N, ...]` (`jax.ShapeDtypeStruct` leaves).
        num_envs: the actor's envs N (every recv returns all of them).
        length: T, env steps per segment.
        out: where segments go (the learner's queue).
        limiter: counts segments handed over.
        store: the learner's parameter store.
        placement: the sharding of learner batches `[K, B, ...]` (`LearnerMesh.batches`), or a function that puts
            them (`LearnerMesh.put_batches`): segments get K = 1.
        max_staleness: segments the parameters may lag (0: synchronous; 1: a deterministic one-segment lag).
    """

    def __init__(self, spec: EnvSpec, record: Any, num_envs: int, length: int, out: BatchQueue,
                 limiter: SegmentLimiter, store: ParamStore, placement: Any, max_staleness: int) -> None:
        self.spec, self.record, self.num_envs, self.length = spec, record, num_envs, length
        self.out, self.limiter, self.store, self.placement = out, limiter, store, placement
        self.staleness = max_staleness
        self.rows = segment_arrays(spec, record, num_envs, length)
        self.t = 0  # the next row to write
        self.completed = 0  # segments this actor filled
        self.held: Segment | None = None  # a full segment not yet handed over
        self.need: int | None = limiter.segments - max_staleness  # the version to take before the next row

    @staticmethod
    def action(record: Any) -> np.ndarray:
        """The env actions in what `act` recorded."""
        return np.asarray(record.action)

    def write(self, batch: StepBatch, record: Any, timers: Timers) -> None:
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

    def refresh(self, take: Callable[[], int], timeout: float) -> bool:
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


class SegmentPath:
    """The segment data path of one process (see the module docstring).

    Attributes:
        limiter: one learner update per segment handed over.
        queue: segments on the learner devices, handed over by the actors themselves.
        record: shapes and dtypes of what `act` returns per row (`jax.ShapeDtypeStruct` leaves).
    """

    feedback = None  # no priorities on this path

    def __init__(self, inputs: PathInputs) -> None:
        cfg, plan, counters, algo = inputs.cfg, inputs.plan, inputs.counters, inputs.algo
        self.cfg, self.plan, self.spec, self.placement = cfg, plan, inputs.spec, inputs.placement
        self.limiter = SegmentLimiter(counters.env_steps, counters.updates, actors=plan.actors,
                                      peer_steps=counters.peer_steps)
        self.queue = BatchQueue(depth=1 if cfg.roles.mode == "serial" else max(1, cfg.replay.prefetch - 1))
        key = jax.eval_shape(jax.random.PRNGKey, 0)  # shapes only: nothing compiled
        shapes = jax.eval_shape(algo.init, key)
        obs = jax.ShapeDtypeStruct((cfg.env.num_envs, *self.spec.obs_shape), self.spec.obs_dtype)
        self.record = jax.eval_shape(algo.act, algo.actor_params(shapes), obs, key, 0.0)[0]

    def writer(self, index: int, env: VecEnv, store: ParamStore) -> SegmentFeed:
        placement = self.placement
        put = placement.put_batches if placement.multiprocess else placement.batches
        return SegmentFeed(self.spec, self.record, env.num_envs, self.plan.segment_length, self.queue, self.limiter,
                           store, put, self.cfg.train.max_staleness)

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return []  # actors put segments on the devices themselves

    def next_batch(self) -> Any:
        """Serial mode: the segment the actor just handed over."""
        return self.queue.get_nowait()

    def ready(self) -> bool:
        return self.queue.depth() >= 1

    def warmup_batches(self) -> Any:
        zeros = segment_arrays(self.spec, self.record, self.cfg.env.num_envs, self.plan.segment_length, lead=(1,))
        return jax.device_put(zeros, self.placement.batches)

    def target_updates(self, counters: Counters) -> int:
        """No fixed count: a group whose actors hand over fewer segments than another's ends the run for all at its
        last one (the stop flag of `GroupSync.leave`), so no group waits for a segment that never comes."""
        return 2**62

    def size(self) -> int:
        return self.queue.depth()

    def state_dict(self) -> dict[str, Any]:
        return {}  # on-policy data is not worth keeping: a resumed run collects with its restored policy

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def rng_state(self) -> dict[str, Any] | None:
        return None

    def set_rng_state(self, state: dict[str, Any]) -> None:
        pass
