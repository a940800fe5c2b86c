"""Replay: n-step targets against hand-computed values, ring-buffer sampling invariants, the lock-free check."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

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


# ------------------------------------------------------------------------------ snapshots and loads (issue 17, 16.5)


class _CopyHook(np.ndarray):
    """A frame ring whose `copy` runs `hook` right after copying: a writer that got in during a snapshot's copy."""

    hook: Any = None

    def copy(self, *args: Any, **kwargs: Any) -> np.ndarray:
        out = np.ndarray.copy(self, *args, **kwargs)
        if _CopyHook.hook is not None:
            _CopyHook.hook()
        return out


def _framed_pair(capacity: int = 3000) -> Any:
    from test_atari import Pair, fake_stream

    pair = Pair(num_envs=4, stack=4, hw=(2, 3), capacity=capacity, n=3, batch=2)
    stream = fake_stream(4, 4, (2, 3), 10_000, 2, (5, 30), seed=3)
    return pair, stream


def test_frame_snapshot_is_one_consistent_cut() -> None:
    """Transitions written while the frames are copied never point at frames the snapshot lacks (replay.frame_dedup
    with checkpoint.save_replay): every restored item is the stack that was stored, and no pointer passes the
    saved frames."""
    from jaxrl_dist.replay.frames import FramePartition

    pair, stream = _framed_pair()
    for _ in range(300):
        pair.write(*next(stream))
    part = pair.part(pair.framed)
    part.frames = part.frames.view(_CopyHook)
    _CopyHook.hook = lambda: [pair.write(*next(stream)) for _ in range(5)]
    try:
        saved = pair.framed.state_dict()
    finally:
        _CopyHook.hook = None
    example = Transition(np.zeros((4, 2, 3), np.uint8), np.int32(0), np.float32(0), np.float32(0),
                         np.zeros((4, 2, 3), np.uint8))
    restored = ReplayBuffer(example, 1, 3000, part.margin,
                            lambda: FramePartition(example, 3000, part.margin, len(part.frames), part.frame_margin))
    restored.load_state_dict(saved)
    r = restored.partitions[0]
    assert isinstance(r, FramePartition)
    seqs = np.arange(r._low(r.committed), r.committed)
    seqs = seqs[~r.unsafe(seqs)]
    assert seqs.size > 100
    assert r.data.next_obs[seqs % r.capacity].max() < r.frames_committed
    plain = pair.plain.partitions[0]
    for field in (0, 4):  # obs, next_obs: the restored stacks are the stored ones
        want = np.empty((seqs.size, 4, 2, 3), np.uint8)
        got = np.empty_like(want)
        plain.gather(seqs, np.arange(seqs.size), [want if i == field else np.empty((seqs.size, *s), d)
                                                  for i, (s, d) in enumerate(plain.item)])
        r.gather(seqs, np.arange(seqs.size), [got if i == field else np.empty((seqs.size, *s), d)
                                              for i, (s, d) in enumerate(r.item)])
        np.testing.assert_array_equal(got, want)


def test_frame_load_refuses_pointers_past_the_saved_frames() -> None:
    pair, stream = _framed_pair()
    for _ in range(200):
        pair.write(*next(stream))
    saved = pair.framed.state_dict()
    saved["p0"]["frames_committed"] = np.int64(int(saved["p0"]["frames_committed"]) - 10)  # a torn snapshot
    with pytest.raises(ValueError, match="frame"):
        pair.framed.load_state_dict(saved)


@pytest.mark.parametrize("damage", ["shape", "partitions", "missing"])
def test_load_refuses_a_replay_of_another_shape(damage: str) -> None:
    """A saved replay that is not this config's is refused, never broadcast into the buffer."""
    buf = ReplayBuffer(example(), 2, 64, 8)
    buf.partitions[0].add(batch_of(np.arange(8)))
    saved = buf.state_dict()
    if damage == "shape":
        saved["p1"]["obs"] = saved["p1"]["obs"][:, :1]  # [64, 1] would broadcast into [64, 3]
    elif damage == "partitions":
        saved["p2"] = saved["p1"]
    else:
        del saved["p0"]["reward"]
    with pytest.raises(ValueError, match="replay"):
        ReplayBuffer(example(), 2, 64, 8).load_state_dict(saved)


@pytest.mark.parametrize("kind", ["rgb", "single"])
def test_frame_dedup_refuses_observations_that_are_no_frame_stacks(kind: str) -> None:
    """[3, H, W] RGB frames, or a [C, H, W] image that does not shift by one frame per step, are refused at the first
    step with a one-line error instead of being rebuilt wrong."""
    from jaxrl_dist.errors import UserError
    from jaxrl_dist.replay.frames import FramePartition, FrameWriter

    example_ = Transition(np.zeros((3, 4, 4), np.uint8), np.int32(0), np.float32(0), np.float32(0),
                          np.zeros((3, 4, 4), np.uint8))
    part = FramePartition(example_, 100, 8, 200, 8)
    writer = FrameWriter(2, 1, 0.9, part)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    nxt = rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8) if kind == "rgb" else obs[:, ::-1].copy()
    with pytest.raises(UserError, match="frame_dedup") as err:
        writer.step(np.arange(2), obs, np.zeros(2, np.int32), np.zeros(2, np.float32), nxt, np.zeros(2, bool),
                    np.zeros(2, bool))
    assert "\n" not in str(err.value)


def life_stream(num_envs: int, rounds: int, seed: int):  # noqa: ANN201  # a generator of recv tuples
    """Rows of every env in every round, as EnvPool gives them with `episodic_life`: after an episode ends the env's
    next row starts one (`first`), whose stack goes on from the last one by one new frame (a lost life) or, at game
    over, repeats one new frame (a new game)."""
    rng = np.random.default_rng(seed)
    ids, stacks = np.arange(num_envs), np.zeros((num_envs, 4, 2, 3), np.uint8)
    ended, game_over = np.ones(num_envs, bool), np.ones(num_envs, bool)
    for _ in range(rounds):
        new = rng.integers(0, 256, (num_envs, 1, 2, 3), dtype=np.uint8)
        shifted = np.concatenate([stacks[:, 1:], new], axis=1)
        stacks = np.where((ended & game_over)[:, None, None, None], np.repeat(new, 4, axis=1), shifted)
        first, term, trunc = ended, ~ended & (rng.uniform(size=num_envs) < 0.1), np.zeros(num_envs, bool)
        yield ids, stacks.copy(), rng.integers(0, 4, num_envs), rng.normal(size=num_envs), term, trunc, first
        ended, game_over = term, rng.uniform(size=num_envs) < 0.3


def test_new_lives_reuse_the_stored_frames() -> None:
    """A new life's first stack goes on from the last one (its C - 1 older frames are stored already): one new frame
    per life, and every stored stack is still given back bit for bit."""
    from test_atari import Pair

    pair = Pair(num_envs=4, stack=4, hw=(2, 3), capacity=5000, n=1, batch=4)
    steps = starts = 0
    for row in life_stream(4, 800, seed=5):
        pair.write(*row)
        starts, steps = starts + int(row[-1].sum()), steps + int((~row[-1]).sum())
    assert pair.assert_same() == steps and starts > 150
    # One frame per step, one per episode start (a new game's repeated frame, or a new life's newest frame).
    assert pair.part(pair.framed).frames_committed <= steps + starts


def test_sampler_staging_never_changes_a_batch_handed_over() -> None:
    """A sampler with staging buffers (accelerators) reuses them call after call: a batch already on the device
    (still queued for the learner) must keep its items when the next ones are gathered. XLA:CPU may use host memory
    in place even for `device_put(..., may_alias=False)`, and a GPU transfer reads the host arrays after device_put
    returns; before the sampler guarded against both, the learner trained on later batches' items (the clipped
    double Q example stopped learning in async mode)."""
    import jax

    from jaxrl_dist.config import build
    from jaxrl_dist.replay.items import zero_samples
    from jaxrl_dist.roles.graph import build_graph
    from jaxrl_dist.roles.lifetime import Timers
    from jaxrl_dist.roles.sampler import Sampler

    g = build_graph(build({"env": {"num_envs": 4}, "eval": {"interval": 0}, "replay": {"batch_size": 256},
                           "roles": {"learner": {"updates_per_call": 4}}}))
    try:
        actor, timers = g.actors[0], Timers()
        actor.refresh_params()
        actor.start()
        for _ in range(400):
            actor.step(timers)
        path = g.path
        sampler = Sampler(path._sample, path.ready, g.placement.batches, path.queue, g.lifetime, timers,
                          np.random.default_rng(3), zero_samples(g.spec, False, (4, 256)))
        expected = path.replay.sample_stacked(4, 256, np.random.default_rng(3))  # the same draws, own arrays
        first = sampler.produce()
        for _ in range(5):  # later batches through the same staging buffers
            sampler.produce()
        for got, want in zip(jax.device_get(first), expected):
            np.testing.assert_array_equal(got, want)
    finally:
        g.close()
