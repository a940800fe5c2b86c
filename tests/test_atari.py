"""Frames stored once: a `FramePartition` fed like an actor feeds it returns exactly what a plain partition returns,
on a fake frame-stack stream (episode starts, truncations, async env subsets, ring wrap-around) and on EnvPool's
Pong; its bytes per transition; and the refusal of observations that are not frame stacks."""

from __future__ import annotations

import numpy as np
import pytest

from jaxrl_dist.algos.base import Transition
from jaxrl_dist.config import build
from jaxrl_dist.envs import make_env
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.replay.buffer import Partition, ReplayBuffer
from jaxrl_dist.replay.frames import FramePartition, FrameWriter, frame_capacity
from jaxrl_dist.replay.nstep import NStepWriter


class Pair:
    """A plain partition and a frame partition, written with the same steps (the actor's write path, twice)."""

    def __init__(self, num_envs: int, stack: int, hw: tuple[int, int], capacity: int, n: int, batch: int) -> None:
        obs = np.zeros((stack, *hw), np.uint8)
        example = Transition(obs, np.int32(0), np.float32(0), np.float32(0), obs)
        margin = batch * n
        self.plain = ReplayBuffer(example, 1, capacity, margin)
        frames = frame_capacity(capacity, stack, num_envs, n, batch)
        self.framed = ReplayBuffer(example, 1, capacity, margin,
                                   lambda: FramePartition(example, capacity, margin, frames, batch * (stack + 1)))
        self.writers: list[NStepWriter] = [
            NStepWriter(num_envs, n, 0.9, obs.shape, np.uint8),
            FrameWriter(num_envs, n, 0.9, self.part(self.framed)),
        ]
        self.last_obs = np.zeros((num_envs, stack, *hw), np.uint8)

    @staticmethod
    def part(replay: ReplayBuffer) -> FramePartition:
        p = replay.partitions[0]
        assert isinstance(p, FramePartition)
        return p

    def write(self, ids: np.ndarray, obs: np.ndarray, actions: np.ndarray, reward: np.ndarray, term: np.ndarray,
              trunc: np.ndarray, first: np.ndarray) -> None:
        """One recv's rows, as `Actor.step` writes them (rows that start an episode are not transitions)."""
        moved = ~first
        sel = ids[moved]
        if sel.size:
            for writer, replay in zip(self.writers, (self.plain, self.framed)):
                t = writer.step(sel, self.last_obs[sel], actions[sel], reward[moved], obs[moved], term[moved],
                                trunc[moved])
                if t is not None:
                    replay.partitions[0].add(t)
        self.last_obs[ids] = obs

    def assert_same(self, draws: int = 200) -> int:
        """Every sampleable item, and `draws` uniform draws with one seed, are equal in both; returns the items."""
        a, b = self.plain.partitions[0], self.part(self.framed)
        assert a.committed == b.committed
        seqs = np.arange(a._low(a.committed), a.committed)
        assert not b.unsafe(seqs).any()  # every frame of every sampleable item is still stored
        out_a = [np.empty((seqs.size, *s), d) for s, d in a.item]
        out_b = [np.empty((seqs.size, *s), d) for s, d in b.item]
        a.gather(seqs, np.arange(seqs.size), out_a)
        b.gather(seqs, np.arange(seqs.size), out_b)
        for x, y in zip(out_a, out_b):
            np.testing.assert_array_equal(x, y)
        x_s = self.plain.sample(draws, np.random.default_rng(7))
        y_s = self.framed.sample(draws, np.random.default_rng(7))
        for x, y in zip(x_s, y_s):
            np.testing.assert_array_equal(x, y)
        return seqs.size


def fake_stream(num_envs: int, stack: int, hw: tuple[int, int], rounds: int, batch: int, lengths: tuple[int, int],
                seed: int):  # noqa: ANN201  # a generator of recv tuples
    """Recvs of `batch` random envs of a frame-stacking env, EnvPool style: a reset stack repeats its first frame;
    a step shifts the stack and appends a new frame; after an episode ends, the env's next recv starts a new one."""
    rng = np.random.default_rng(seed)
    stacks = np.zeros((num_envs, stack, *hw), np.uint8)
    left = np.zeros(num_envs, np.int64)  # steps left in the episode; 0: the next recv is a reset
    for _ in range(rounds):
        ids = np.sort(rng.choice(num_envs, size=batch, replace=False))
        first, term, trunc = left[ids] == 0, np.zeros(batch, bool), np.zeros(batch, bool)
        frames = rng.integers(0, 256, size=(batch, *hw), dtype=np.uint8)
        for j, e in enumerate(ids):
            if first[j]:
                stacks[e] = frames[j]
                left[e] = rng.integers(*lengths)
            else:
                stacks[e] = np.concatenate([stacks[e, 1:], frames[j][None]])
                left[e] -= 1
                if left[e] == 0:
                    term[j] = rng.uniform() < 0.5
                    trunc[j] = not term[j]
        yield ids, stacks[ids].copy(), rng.integers(0, 4, num_envs), rng.normal(size=batch), term, trunc, first


@pytest.mark.parametrize("n, capacity, lengths", [(3, 5000, (3, 20)), (1, 5000, (1, 6)), (3, 300, (50, 150))])
def test_frames_match_plain_buffer_on_fake_stream(n: int, capacity: int, lengths: tuple[int, int]) -> None:
    """Short episodes (many starts, one-step episodes), and a small ring that wraps several times."""
    pair = Pair(num_envs=6, stack=4, hw=(6, 5), capacity=capacity, n=n, batch=4)
    for recv in fake_stream(6, 4, (6, 5), 800, 4, lengths, seed=n + capacity):
        pair.write(*recv)
    assert pair.assert_same() > 200
    framed = pair.part(pair.framed)
    if capacity < 1000:
        assert framed.committed > 5 * capacity and framed.frames_committed > 5 * len(framed.frames)
    # A checkpointed copy (save_replay) samples the same items.
    saved = pair.framed.state_dict()
    pair.framed = Pair(6, 4, (6, 5), capacity, n, 4).framed
    pair.framed.load_state_dict(saved)
    assert pair.assert_same() > 200


def test_frames_match_plain_buffer_on_pong() -> None:
    """EnvPool Pong-v5, two envs, random actions, an 80-step time limit: several episode boundaries."""
    env = make_env(env_id="Pong-v5", num_envs=2, batch_size=2, num_threads=1, seed=3, max_episode_steps=80,
                   backend="auto", kwargs={}, wrappers=[])
    rng = np.random.default_rng(0)
    pair = Pair(num_envs=2, stack=4, hw=(84, 84), capacity=2000, n=3, batch=2)
    starts = 0
    try:
        env.reset()
        for _ in range(300):
            b = env.recv()
            order = np.argsort(b.env_ids)
            ids, obs = b.env_ids[order], b.obs[order]
            actions = rng.integers(0, env.spec.num_actions, 2).astype(np.int32)
            full = np.zeros(2, np.int32)
            full[ids] = actions
            pair.write(ids, obs, full, b.reward[order], b.terminated[order], b.truncated[order], b.first[order])
            starts += int(b.first.sum())
            env.send(actions, ids)
    finally:
        env.close()
    assert starts >= 6  # 2 initial resets and at least 4 more after time limits
    # EnvPool's first stack repeats the reset frame: stored once, pointed at 4 times.
    assert pair.assert_same() > 500
    framed = pair.part(pair.framed)
    assert framed.frames_committed < framed.committed + 2 * starts


def test_bytes_per_transition_pong() -> None:
    obs = np.zeros((4, 84, 84), np.uint8)
    example = Transition(obs, np.int32(0), np.float32(0), np.float32(0), obs)
    capacity = 20_000  # numpy's zeros are not touched here, so this costs no memory
    frames = frame_capacity(capacity, 4, 16, 3, 8)
    part = FramePartition(example, capacity, 24, frames, 8 * 5)
    plain = Partition(example, capacity, 24)
    framed_bytes = part.bytes_per_transition()
    plain_bytes = sum(x.nbytes for x in plain.data) / capacity
    assert framed_bytes <= 7.5 * 1024 and plain_bytes > 7 * framed_bytes


def test_frame_dedup_needs_frame_stacks() -> None:
    from jaxrl_dist.roles.graph import build_graph  # here: other test modules import Pair without the system

    cfg = build({"replay": {"frame_dedup": True}, "roles": {"mode": "serial"}})
    with pytest.raises(ConfigError, match="replay.frame_dedup.*uint8 frame stacks"):
        build_graph(cfg)
