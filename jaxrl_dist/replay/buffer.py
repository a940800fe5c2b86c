"""A host replay buffer: numpy rings, one partition per actor, sampled without a lock over the data.

Each actor is the only writer of its partition, so writes need no lock. A writer stores a batch of transitions in
the slots after its `committed` counter and only then advances the counter (one Python assignment, atomic under the
GIL). The sampler snapshots `committed`, samples sequence numbers that no write in flight can reach, gathers them,
and re-reads `committed` afterwards: a sampled item whose slot a writer may have reached meanwhile is drawn again
(an optimistic, seqlock-style check). No slot being overwritten is ever returned.

Two hooks let other layouts and samplers reuse this: a partition subclass may store items otherwise and rebuild
them in `gather` / check them in `unsafe` (`jaxrl_dist.replay.frames`), and a buffer subclass may draw sequence
numbers otherwise in `_draw` (`jaxrl_dist.replay.prioritized`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

from jaxrl_dist.records import Transition


class Partition:
    """One writer's ring of transitions.

    Args:
        example: a `Transition` of single items (no batch axis) giving the shapes and dtypes.
        capacity: slots.
        write_margin: the most transitions one `add` may write (slots in flight that samplers must avoid).
    """

    def __init__(self, example: Transition, capacity: int, write_margin: int) -> None:
        self.capacity, self.margin = capacity, write_margin
        self.data = Transition(*(np.zeros((capacity, *np.shape(x)), np.asarray(x).dtype) for x in example))
        # What `gather` returns per item: here the stored fields; a subclass may store them otherwise.
        self.item: list[tuple[tuple[int, ...], np.dtype]] = [(np.shape(x), np.asarray(x).dtype) for x in example]
        self.committed = 0  # sequence number of the next write; items [committed - capacity, committed) are stored
        self.floor = 0  # no item below this sequence number is sampled (set when restored from a live snapshot)

    def add(self, batch: Transition) -> None:
        """Stores a batch of `k <= write_margin` transitions (leading axis k). Called by the owning actor only."""
        k = len(batch.reward)
        if k > self.margin:
            raise ValueError(f"add of {k} transitions exceeds the write margin {self.margin}")
        start = self.committed % self.capacity
        if start + k <= self.capacity:
            for store, values in zip(self.data, batch):
                store[start : start + k] = values
        else:
            slots = (start + np.arange(k)) % self.capacity
            for store, values in zip(self.data, batch):
                store[slots] = values
        self.committed += k  # publish only after the data is written

    def _low(self, committed: int) -> int:
        return max(self.floor, committed - self.capacity + 2 * self.margin)

    def size(self) -> int:
        """Items a sampler may draw now."""
        committed = self.committed
        return max(0, committed - self._low(committed))

    def sample_into(self, seqs_out: np.ndarray, rng: np.random.Generator) -> None:
        """Fills `seqs_out` with sequence numbers that are safe to read at the moment of the call."""
        committed = self.committed
        seqs_out[:] = rng.integers(self._low(committed), committed, size=seqs_out.shape)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the stored items that is safe while the writer runs.

        The counter is read before and after copying: items the writer may have overwritten during the copy (below
        `after + margin - capacity`) are excluded by the saved `floor`.
        """
        before = self.committed
        arrays = {name: store.copy() for name, store in zip(Transition._fields, self.data)}
        after = self.committed
        floor = max(self.floor, after + self.margin - self.capacity, 0)
        return {"committed": np.int64(before), "floor": np.int64(floor), **arrays}

    def check(self, saved: dict[str, Any]) -> None:
        """Raises ValueError unless `saved` is a snapshot of a partition like this one (every field, each of this
        partition's shape and dtype: one that differs is refused, never broadcast into the ring)."""
        check_saved(saved, ("committed", "floor"), zip(Transition._fields, self.data))

    def load(self, saved: dict[str, Any]) -> None:
        """Takes back a `snapshot` once `check` passed (ValueError otherwise)."""
        self.check(saved)
        for name, store in zip(Transition._fields, self.data):
            store[...] = saved[name]
        self.committed, self.floor = int(saved["committed"]), int(saved["floor"])

    def unsafe(self, seqs: np.ndarray) -> np.ndarray:
        """Mask of sequence numbers whose slots a writer may have reached since they were sampled."""
        return seqs < self.committed + self.margin - self.capacity

    def gather(self, seqs: np.ndarray, rows: np.ndarray, out: list[np.ndarray]) -> None:
        """Copies the items `seqs` `[N]` into rows `rows` `[N]` (ascending) of the output fields `out` (one array per
        field), straight into them (no temporary of the batch's size)."""
        slots = seqs % self.capacity
        for dst, src in zip(out, self.data):
            take_rows(src, slots, dst, rows)


def take_rows(src: np.ndarray, index: np.ndarray, dst: np.ndarray, rows: np.ndarray) -> None:
    """`dst[rows] = src[index]` (along the first axis; `index` may have more axes, as frame stacks do), gathered
    straight into `dst` for every run of consecutive `rows`: a fancy-indexed assignment would first build the whole
    gathered batch as a temporary (for Atari frames, tens of MB per learner call) and copy it again."""
    if not rows.size:
        return
    if rows[-1] - rows[0] + 1 == rows.size:  # one run: the common case (one partition, or sorted draws)
        # mode="clip": indices are in range, and numpy buffers `out` with the default mode="raise".
        np.take(src, index, axis=0, out=dst[rows[0]:rows[-1] + 1], mode="clip")
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run, part in zip(np.split(rows, breaks), np.split(index, breaks)):
        np.take(src, part, axis=0, out=dst[run[0]:run[-1] + 1], mode="clip")


class ReplayBuffer:
    """Partitions of a replay buffer, sampled together in proportion to their sizes.

    Args:
        example: a `Transition` of single items giving the shapes and dtypes.
        partitions: one per actor (one writer each).
        capacity_per_partition: slots per partition.
        write_margin: the most transitions one `add` writes.
    """

    def __init__(self, example: Transition, partitions: int, capacity_per_partition: int, write_margin: int,
                 make_partition: Callable[[], Partition] | None = None) -> None:
        make = make_partition or (lambda: Partition(example, capacity_per_partition, write_margin))
        self.partitions = [make() for _ in range(partitions)]

    def size(self) -> int:
        return sum(p.size() for p in self.partitions)

    def sample(self, count: int, rng: np.random.Generator) -> Transition:
        """Draws `count` transitions uniformly over the stored items of all partitions.

        Returns:
            A `Transition` of numpy arrays with leading axis `count`.
        """
        return Transition(*(x[0] for x in self.sample_stacked(1, count, rng)))

    def sample_stacked(self, k: int, batch: int, rng: np.random.Generator, env_steps: int = 0,
                       out: Any = None) -> Any:
        """One learner call's batches: a `Transition` of `[k, batch, ...]` arrays, drawn uniformly over the stored
        items of all partitions (`env_steps` is unused here; the prioritized replay anneals its importance-sampling
        exponent with it).

        Args:
            k, batch: batches per call and items per batch.
            rng: the sampler's generator.
            env_steps: this process's env steps.
            out: the arrays to fill (`[k, batch, ...]`, e.g. a sampler's staging buffers, reused call after call);
                None: new ones.
        """
        which = self._choose(k, batch, rng, np.array([p.size() for p in self.partitions], np.float64))
        fields = self._sample_from(which, rng, 100, self._flat(out, k, batch))[0]
        return Transition(*(x.reshape(k, batch, *x.shape[1:]) for x in fields))

    def _flat(self, out: Any, k: int, batch: int) -> list[np.ndarray]:
        """The output fields as `[k * batch, ...]` views (of `out`'s first fields, or of new arrays)."""
        if out is None:
            return [np.empty((k * batch, *shape), dtype) for shape, dtype in self.partitions[0].item]
        return [x.reshape(k * batch, *x.shape[2:]) for x in list(out)[:len(self.partitions[0].item)]]

    def _choose(self, k: int, batch: int, rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
        """`[k * batch]` partition numbers drawn in proportion to `weights`, ascending within each batch (so that
        each partition's rows run consecutively, and gather straight into the output)."""
        if weights.sum() <= 0:
            raise RuntimeError("sample from an empty replay buffer")
        if len(self.partitions) == 1:
            return np.zeros(k * batch, np.int64)
        which = rng.choice(len(self.partitions), size=(k, batch), p=weights / weights.sum())
        which.sort(axis=1)
        return which.ravel()

    def _sample_from(self, which: np.ndarray, rng: np.random.Generator, tries: int, out: list[np.ndarray]
                     ) -> tuple[list[np.ndarray], np.ndarray]:
        """Gathers one item per entry of `which` `[N]` (partition numbers) into the `[N, ...]` fields `out`;
        returns them and the `[N]` sequence numbers."""
        count = len(which)
        seqs = np.empty(count, np.int64)
        for index, part in enumerate(self.partitions):
            rows = np.flatnonzero(which == index) if len(self.partitions) > 1 else np.arange(count)
            if rows.size:
                seqs[rows] = self._gather(index, rows, out, rng, tries)
        return out, seqs

    def _draw(self, index: int, seqs_out: np.ndarray, rng: np.random.Generator) -> None:
        """Fills `seqs_out` with sequence numbers of partition `index` (uniformly here)."""
        self.partitions[index].sample_into(seqs_out, rng)

    def _gather(self, index: int, rows: np.ndarray, out: list[np.ndarray], rng: np.random.Generator, tries: int
                ) -> np.ndarray:
        part = self.partitions[index]
        seqs = np.empty(rows.size, np.int64)
        self._draw(index, seqs, rng)
        todo_rows, todo_seqs, todo = rows, seqs, np.arange(rows.size)
        for _ in range(tries):
            part.gather(todo_seqs, todo_rows, out)
            bad = part.unsafe(todo_seqs)  # read after the gather: catches writes that overlapped it
            seqs[todo] = todo_seqs
            if not bad.any():
                return seqs
            todo_rows, todo = todo_rows[bad], todo[bad]
            todo_seqs = np.empty(todo_rows.size, np.int64)
            self._draw(index, todo_seqs, rng)
        raise RuntimeError("replay sampler kept racing the writers; raise replay.capacity")

    def state_dict(self) -> dict[str, Any]:
        """The stored items of every partition (for checkpoints with `save_replay`)."""
        return {f"p{i}": p.snapshot() for i, p in enumerate(self.partitions)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Takes back a `state_dict` of a buffer like this one.

        Raises:
            ValueError: A different number of partitions, or a partition that does not fit (see `Partition.load`).
        """
        saved = sorted(k for k in state if k[:1] == "p" and k[1:].isdigit())
        if saved != sorted(f"p{i}" for i in range(len(self.partitions))):
            raise ValueError(f"the saved replay has {len(saved)} partitions, this run's replay {len(self.partitions)}")
        for i, part in enumerate(self.partitions):
            part.load(state[f"p{i}"])


def check_saved(saved: dict[str, Any], scalars: tuple[str, ...], arrays: Iterable[tuple[str, np.ndarray]]) -> None:
    """Raises ValueError unless `saved` holds each of `scalars` and each `(name, array)` of `arrays` with that
    array's shape and dtype."""
    arrays = list(arrays)
    missing = [name for name in scalars if name not in saved] + [name for name, _ in arrays if name not in saved]
    if missing:
        raise ValueError(f"the saved replay lacks {', '.join(missing)}")
    for name, store in arrays:
        got = np.asarray(saved[name])
        if got.shape != store.shape or got.dtype != store.dtype:
            raise ValueError(f"the saved replay's {name} has shape {got.shape} ({got.dtype}), this run's replay "
                             f"{store.shape} ({store.dtype})")
