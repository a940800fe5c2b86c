"""Replay: n-step targets against hand-computed values, ring-buffer sampling invariants, the lock-free check."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import pytest

from jaxrl_dist.algos.base import Transition
from jaxrl_dist.replay import NStepWriter, ReplayBuffer


def feed(writer: NStepWriter, steps: list[tuple[int, float, bool, bool]]) -> Transition:
    """Steps of env 0: (obs id, reward, terminated, truncated); obs are scalars equal to the step index."""
    out = []
    for t, (o, r, term, trunc) in enumerate(steps):
        got = writer.step(np.array([0]), np.array([[o]], np.float32), np.array([t], np.int32), np.array([r]),
                          np.array([[o + 1]], np.float32), np.array([term]), np.array([trunc]))
        if got is not None:
            out.append(got)
    return Transition(*(np.concatenate(f) for f in zip(*out)))


def test_nstep_hand_computed() -> None:
    g = 0.5
    w = NStepWriter(1, 3, g, (1,), np.float32)
    # rewards 1, 2, 4, 8 then terminated at the 4th step.
    t = feed(w, [(0, 1, False, False), (1, 2, False, False), (2, 4, False, False), (3, 8, True, False)])
    # windows: [0..2] -> 1 + .5*2 + .25*4 = 3, discount .125, next obs 3
    #          [1..3] (ends, terminated) -> 2 + .5*4 + .25*8 = 6, discount 0
    #          [2..3] -> 4 + .5*8 = 8, discount 0;  [3] -> 8, discount 0
    np.testing.assert_allclose(t.reward, [3, 6, 8, 8])
    np.testing.assert_allclose(t.discount, [0.125, 0, 0, 0])
    np.testing.assert_array_equal(t.obs[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(t.action, [0, 1, 2, 3])
    np.testing.assert_array_equal(t.next_obs[:, 0], [3, 4, 4, 4])


def test_nstep_truncation_bootstraps() -> None:
    g = 0.9
    w = NStepWriter(1, 3, g, (1,), np.float32)
    t = feed(w, [(0, 1, False, False), (1, 1, False, True)])
    np.testing.assert_allclose(t.reward, [1 + g, 1])
    np.testing.assert_allclose(t.discount, [g**2, g])  # truncation keeps gamma^k: bootstrap from the final obs
    np.testing.assert_array_equal(t.next_obs[:, 0], [2, 2])
    # After the flush the next episode starts clean.
    t2 = feed(w, [(10, 1, True, False)])
    np.testing.assert_allclose(t2.discount, [0])
    np.testing.assert_array_equal(t2.obs[:, 0], [10])


def test_nstep_one_step_and_many_envs() -> None:
    w = NStepWriter(4, 1, 0.99, (2,), np.float32)
    ids = np.array([3, 1])
    t = w.step(ids, np.ones((2, 2), np.float32), np.array([1, 0]), np.array([1.0, 2.0]), np.zeros((2, 2), np.float32),
               np.array([True, False]), np.array([False, True]))
    np.testing.assert_allclose(t.discount, [0.0, 0.99])
    # n=2 over interleaved envs: each env's window only holds its own steps.
    w = NStepWriter(2, 2, 1.0, (1,), np.float32)
    outs = [w.step(np.array([e]), np.array([[10 * e + k]], np.float32), np.array([k]), np.array([float(10 * e + k)]),
                   np.array([[10 * e + k + 1]], np.float32), np.array([False]), np.array([False]))
            for k in range(2) for e in range(2)]
    done = [o for o in outs if o is not None]
    assert len(done) == 2
    np.testing.assert_allclose([d.reward[0] for d in done], [0 + 1, 10 + 11])


def example() -> Transition:
    return Transition(np.zeros(3, np.float32), np.int32(0), np.float32(0), np.float32(0), np.zeros(3, np.float32))


def batch_of(seqs: np.ndarray) -> Transition:
    """Transitions whose every field encodes their sequence number."""
    k = len(seqs)
    obs = np.repeat(seqs[:, None].astype(np.float32), 3, 1)
    return Transition(obs, seqs.astype(np.int32), seqs.astype(np.float32), np.ones(k, np.float32), obs + 1)


def test_ring_keeps_newest_and_samples_only_stored_items() -> None:
    buf = ReplayBuffer(example(), 1, capacity_per_partition=100, write_margin=10)
    part = buf.partitions[0]
    for start in range(0, 250, 10):
        part.add(batch_of(np.arange(start, start + 10)))
    rng = np.random.default_rng(0)
    s = buf.sample(5000, rng)
    # Items 150..249 are stored; the 2 * margin oldest are never drawn (a writer may be in flight there).
    assert s.reward.min() >= 250 - 100 + 20 and s.reward.max() <= 249
    assert len(np.unique(s.reward)) == 80
    np.testing.assert_array_equal(s.obs[:, 0], s.reward)  # every field of an item comes from the same slot
    np.testing.assert_array_equal(s.next_obs[:, 0], s.reward + 1)


def test_partitions_sampled_by_size() -> None:
    buf = ReplayBuffer(example(), 2, capacity_per_partition=1000, write_margin=10)
    buf.partitions[0].add(batch_of(np.arange(10)))
    for start in range(0, 300, 10):
        buf.partitions[1].add(batch_of(np.arange(1000 + start, 1010 + start)))
    s = buf.sample(31_000, np.random.default_rng(1))
    share = (s.reward < 1000).mean()
    assert share == pytest.approx(10 / 310, abs=0.005)


@contextlib.contextmanager
def racing_writer(capacity: int = 256, margin: int = 16) -> Iterator[ReplayBuffer]:
    """A one-partition buffer whose writer thread keeps adding batches of `margin` items while the body runs."""
    buf = ReplayBuffer(example(), 1, capacity_per_partition=capacity, write_margin=margin)
    part = buf.partitions[0]
    part.add(batch_of(np.arange(margin)))
    stop = threading.Event()

    def writer() -> None:
        seq = margin
        while not stop.is_set():
            part.add(batch_of(np.arange(seq, seq + margin)))
            seq += margin

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield buf
    finally:
        stop.set()
        thread.join(5)


def test_concurrent_writer_never_yields_torn_items() -> None:
    """A writer races the sampler; every sampled item must be internally consistent and recent enough."""
    rng = np.random.default_rng(2)
    with racing_writer() as buf:
        for _ in range(2000):
            s = buf.sample(64, rng)
            np.testing.assert_array_equal(s.obs[:, 0], s.reward)
            np.testing.assert_array_equal(s.action, s.reward.astype(np.int32))
            np.testing.assert_array_equal(s.next_obs[:, 2], s.reward + 1)


def test_state_dict_round_trip() -> None:
    buf = ReplayBuffer(example(), 1, 64, 8)
    buf.partitions[0].add(batch_of(np.arange(8)))
    other = ReplayBuffer(example(), 1, 64, 8)
    other.load_state_dict(buf.state_dict())
    assert other.partitions[0].committed == 8
    np.testing.assert_array_equal(other.partitions[0].data.reward[:8], np.arange(8))


def test_snapshot_during_writes_restores_only_intact_items() -> None:
    """Checkpoint snapshots taken while a writer races them restore only consistent, not-overwritten items."""
    rng = np.random.default_rng(4)
    with racing_writer() as buf:
        for _ in range(200):
            restored = ReplayBuffer(example(), 1, 256, 16)
            restored.load_state_dict(buf.state_dict())
            p = restored.partitions[0]
            if p.size() == 0:
                continue  # the writer lapped the whole ring during the copy: nothing trustworthy to restore
            s = restored.sample(256, rng)
            assert s.reward.min() >= p.floor and s.reward.max() < p.committed
            np.testing.assert_array_equal(s.obs[:, 0], s.reward)
            np.testing.assert_array_equal(s.next_obs[:, 1], s.reward + 1)
