"""Proportional prioritized replay (Schaul et al. 2016) over the partitioned, lock-free replay.

Each partition gets a `SumTree` over its slots. Only the sampler thread touches the trees; the actors write their
partitions exactly as with uniform replay (never blocked, never locked). Before every draw the sampler brings each
tree up to date with its partition: slots that left the sampleable window (`Partition._low`, items a writer may
reach soon) get priority 0, and items committed since the last draw get the largest priority seen so far, so a new
transition is drawn at least once with high probability before its TD error is known.

A draw picks a partition with probability `total_p / sum of totals`, then an item by a prefix-sum search in its
tree, so item `i` is drawn with `P(i) = p_i / sum_j p_j` over all stored items. Its importance weight is
`(N * P(i)) ** -beta`, divided by the largest weight of its update's batch (the weights only scale the loss down),
with `beta` annealed linearly from `beta_start` to `beta_end` over `beta_steps` env steps.

Priority feedback: the learner returns `|TD error|` for every sampled item of a call, with the item's index
(partition, sequence number mod 2^31), through `feedback()` (a `PriorityFeedback`), a queue that never blocks the
learner. The sampler applies what has arrived, as `(|td| + eps) ** alpha`, before its next draw. An item whose slot
was overwritten (or left the sampleable window) since it was drawn is **dropped**: its feedback would describe
another transition.
In async mode the sampler applies only the feedback whose device results are ready (it never waits for the learner),
so updates arrive one or two learner calls late; in serial mode it applies all of it, in order, so runs stay
deterministic.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import numpy as np

from jaxrl_dist.records import PrioritizedBatch, PriorityFeedback
from jaxrl_dist.replay.buffer import Partition, ReplayBuffer
from jaxrl_dist.replay.sumtree import SumTree

SEQ_MOD = 1 << 31  # sequence numbers travel to the device as int32 (JAX's default integer width)


def local_rows(index: Any, td_abs: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(index [N, 2], |td| [N])` on the host for the rows of this process's batch.

    On one process that is every row. Where the learner mesh spans processes (`jax.distributed`), the global batch
    is every process's batch side by side and only this process's rows belong to its replay: they are the shards of
    `index` it holds, and the same rows of `td_abs` (whole on every device after the learner's all-gather).
    """
    if getattr(index, "is_fully_addressable", True):
        return np.asarray(index).reshape(-1, 2), np.asarray(td_abs, np.float64).reshape(-1)
    return rows_from_shards(index, td_abs)


def rows_from_shards(index: Any, td_abs: Any) -> tuple[np.ndarray, np.ndarray]:
    """`local_rows` of device arrays: the rows of the `index` shards this process holds (in shard order), each with
    its own `|td|`."""
    td = np.asarray(td_abs.addressable_data(0), np.float64)
    shards = sorted(index.addressable_shards, key=lambda sh: sh.index[1].start or 0)
    rows = [(np.asarray(sh.data).reshape(-1, 2), td[sh.index[:2]].reshape(-1)) for sh in shards]
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def linear_beta(start: float, end: float, steps: int) -> Callable[[int], float]:
    """`env_steps -> beta`, linear from `start` to `end` over `steps` env steps, then `end`."""

    def beta(t: int) -> float:
        return start + min(1.0, max(0, t) / max(1, steps)) * (end - start)

    return beta


class PrioritizedReplay(ReplayBuffer):
    """A `ReplayBuffer` that samples in proportion to priorities and returns `PrioritizedBatch`es.

    Args:
        example, partitions, capacity_per_partition, write_margin, make_partition: as for `ReplayBuffer`.
        alpha: priority exponent (0: uniform).
        beta: `env_steps -> beta`, the importance-sampling exponent.
        eps: added to `|td|` so that no item's priority is 0.
        block: apply all pending feedback before a draw, waiting for the learner's results (serial mode).
        feedback_depth: learner calls whose feedback may wait; older ones are dropped rather than block the learner.
    """

    def __init__(self, example: Any, partitions: int, capacity_per_partition: int, write_margin: int, *,
                 alpha: float, beta: Callable[[int], float], eps: float, block: bool = False,
                 make_partition: Callable[[], Partition] | None = None, feedback_depth: int = 64) -> None:
        super().__init__(example, partitions, capacity_per_partition, write_margin, make_partition)
        self.alpha, self.beta, self.eps, self.block = alpha, beta, eps, block
        self.trees = [SumTree(p.capacity) for p in self.partitions]
        # [low, high): the sequence numbers each tree holds priorities for (only the sampler thread changes them).
        self.window = [[0, 0] for _ in self.partitions]
        self.max_priority = 1.0
        self._pending: collections.deque[PriorityFeedback] = collections.deque(maxlen=feedback_depth)
        self._lock = threading.RLock()  # the trees, windows and feedback (several sampler threads may draw)
        self.applied = 0  # feedback items applied (for tests and metrics)
        self.dropped = 0  # feedback items dropped because their slot was overwritten

    # --- the learner's side -------------------------------------------------------------------------------------

    def feedback(self, feedback: PriorityFeedback) -> None:
        """Queues new priorities: `index` `[..., 2]` int (partition, seq mod 2^31) and `priority` `[...]` float
        `|td|`, numpy or device arrays (not waited for here). Thread-safe; never blocks."""
        self._pending.append(feedback)

    # --- the sampler's side -------------------------------------------------------------------------------------

    def _sync(self, index: int) -> None:
        """Makes tree `index` hold exactly the partition's sampleable items (see the module doc)."""
        part, tree, window = self.partitions[index], self.trees[index], self.window[index]
        committed = part.committed
        low = part._low(committed)
        old_low, old_high = window
        cap = part.capacity
        gone = np.arange(max(old_low, min(low, old_high) - cap), min(low, old_high))
        tree.update(gone % cap, 0.0)
        added = np.arange(max(old_high, low, committed - cap), committed)
        tree.update(added % cap, self.max_priority)
        window[0], window[1] = low, committed

    def _apply_feedback(self) -> None:
        while self._pending:
            index, td = self._pending[0]
            if not self.block and not all(getattr(x, "is_ready", lambda: True)() for x in (index, td)):
                return  # the learner's call is still running: apply it before a later draw
            self._pending.popleft()
            self._apply(*local_rows(index, td))

    def _apply(self, index: np.ndarray, td: np.ndarray) -> None:
        priority = (np.abs(td) + self.eps) ** self.alpha
        for p, tree in enumerate(self.trees):
            mine = index[:, 0] == p
            if not mine.any():
                continue
            low, high = self.window[p]
            # The full sequence number from its low 31 bits: the item is less than 2^31 writes old.
            seqs = high - (high - index[mine, 1].astype(np.int64)) % SEQ_MOD
            live = (seqs >= low) & (seqs < high)
            tree.update(seqs[live] % self.partitions[p].capacity, priority[mine][live])
            self.applied += int(live.sum())
            self.dropped += int((~live).sum())
        if len(priority):
            self.max_priority = max(self.max_priority, float(priority.max()))

    def _draw(self, index: int, seqs_out: np.ndarray, rng: np.random.Generator) -> None:
        """Items of partition `index` in proportion to their priorities (a redraw re-syncs the tree first)."""
        with self._lock:
            self._sync(index)
            tree, window = self.trees[index], self.window[index]
            slots = tree.find(rng.uniform(0.0, tree.total, size=seqs_out.shape))
            high = window[1]
        cap = self.partitions[index].capacity
        seqs_out[:] = high - 1 - (high - 1 - slots) % cap  # the newest sequence number stored in each slot

    def sample_stacked(self, k: int, batch: int, rng: np.random.Generator, env_steps: int = 0,
                       out: Any = None) -> PrioritizedBatch:
        """One learner call's batches `[k, batch, ...]` with importance weights and indices. Several sampler threads
        may call it at once: the trees change under a lock, the gathers run outside it.

        Args:
            k, batch, rng, env_steps: as for `ReplayBuffer.sample_stacked`; `env_steps` sets beta.
            out: a `PrioritizedBatch` of `[k, batch, ...]` arrays to fill (a sampler's staging buffers); None: new.

        Returns:
            A `PrioritizedBatch`: the transition fields, `weight [k, batch]` float32 (each row's largest is 1), and
            `index [k, batch, 2]` int32 (partition, sequence number mod 2^31) for `feedback`.
        """
        with self._lock:
            for i in range(len(self.partitions)):
                self._sync(i)
            self._apply_feedback()  # after the sync: feedback for items that left the window is dropped
            which = self._choose(k, batch, rng, np.array([tree.total for tree in self.trees]))
        fields, seqs = self._sample_from(which, rng, 100, self._flat(out, k, batch))
        count = k * batch
        with self._lock:
            # The probabilities of the items returned, from the trees as they are now (a redraw or another sampler
            # may have re-synced one).
            totals = np.array([tree.total for tree in self.trees])
            priority = np.empty(count)
            for i, part in enumerate(self.partitions):
                rows = which == i
                priority[rows] = self.trees[i].get(seqs[rows] % part.capacity)
            # An item whose window moved past it since it was drawn reads 0 now (rare): weigh it as new.
            priority = np.where(priority > 0, priority, self.max_priority)
            stored = sum(w[1] - w[0] for w in self.window)
        weight = (stored * priority / totals.sum()) ** -self.beta(env_steps)
        weight = weight.reshape(k, batch)
        weight /= weight.max(axis=1, keepdims=True)
        index = np.stack([which, seqs % SEQ_MOD], axis=-1).astype(np.int32).reshape(k, batch, 2)
        obs, action, reward, discount, next_obs = (x.reshape(k, batch, *x.shape[1:]) for x in fields)
        if out is None:
            return PrioritizedBatch(obs, action, reward, discount, next_obs, weight.astype(np.float32), index)
        out.weight[...] = weight
        out.index[...] = index
        return PrioritizedBatch(obs, action, reward, discount, next_obs, out.weight, out.index)

    def state_dict(self) -> dict[str, Any]:
        """The partitions' items and each tree's priorities (read while the sampler may change them: priorities are
        advice, a slightly torn copy only changes the order of draws after a resume)."""
        state = super().state_dict()
        with self._lock:
            trees = [tree.priorities().copy() for tree in self.trees]
        for i, priorities in enumerate(trees):
            state[f"p{i}"] = {**state[f"p{i}"], "priorities": priorities}
        state["max_priority"] = np.float64(self.max_priority)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.max_priority = float(state.get("max_priority", 1.0))
        for i, part in enumerate(self.partitions):
            self.window[i] = [0, 0]
            self.trees[i] = SumTree(part.capacity)
            self._sync(i)  # the restored items, at the largest priority
            saved = state[f"p{i}"].get("priorities")
            if saved is not None:
                slots = np.flatnonzero((self.trees[i].priorities() > 0) & (np.asarray(saved) > 0))
                self.trees[i].update(slots, np.asarray(saved)[slots])
