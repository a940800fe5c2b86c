"""Stacked frames stored once: a replay partition of single frames, with frame stacks rebuilt at sample time.

An Atari observation is a stack of the last C frames (`[C, 84, 84]` uint8), so consecutive observations of one env
share C - 1 frames, and `next_obs` of a transition is the `obs` of the next one. Stored as stacks, a transition
costs `2 * C * 84 * 84` bytes (56 KB for C = 4); stored once, one frame (7 KB).

Layout of one partition (one writer, like `Partition`):

* a frame ring `[F, H, W]` with its own sequence numbers (`frames_committed`, written before the transitions that
  point at them);
* the transition ring of `Partition`, whose `obs` and `next_obs` hold `[C]` int64 frame sequence numbers instead of
  frames.

`FrameWriter` turns env steps into that form. It keeps each env's current stack as C frame numbers; a step appends
the newest frame of `next_obs` and shifts the stack, which is exactly what the env does (checked against EnvPool's
Pong in tests/test_atari.py). Where an episode starts, it appends the frames of the first stack as the env returned
it (EnvPool repeats the reset frame C times: equal neighbouring frames are stored once and pointed at C times), so the
stack padding at episode starts is whatever the env gave, and a sampled `obs` / `next_obs` equals the stored
observation bit for bit. n-step windows come from the same `NStepWriter`, run on frame numbers. Each env's first
steps are checked to shift its stack by one frame (RGB frames or a single image as `[C, H, W]` are refused, not
rebuilt wrong). After an Atari life loss (`episodic_life`) EnvPool goes on with the stack: the new life's first stack
is the last one's newest C - 1 frames and one new frame, so only that frame is stored and the others are pointed at.

The sampler rebuilds stacks by one fancy index into the frame ring. An item is safe to read when its transition slot
is (the `Partition` check) and so are its frames: a frame below `frames_committed + frame_margin - F` may be being
overwritten and the item is drawn again.

A snapshot (checkpoints with `save_replay`) is one consistent cut taken while the writer runs: the transitions
first, then the frames, so that every transition it holds was published after its frames (the writer's order) and
points below the saved frame count. Loading refuses a snapshot with a pointer past its frames.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from jaxrl_dist.errors import UserError
from jaxrl_dist.records import Transition
from jaxrl_dist.replay.buffer import Partition, check_saved, take_rows
from jaxrl_dist.replay.nstep import NStepWriter


class FrameBatch(NamedTuple):
    """What one `FrameWriter.step` hands its partition.

    Attributes:
        frames: `[M, H, W]` new frames, numbered from the partition's `frames_committed` on.
        transitions: completed n-step transitions with `obs`/`next_obs` as `[N, C]` int64 frame numbers, or None.
    """

    frames: np.ndarray
    transitions: Transition | None


def frame_capacity(capacity: int, stack: int, num_envs: int, n_step: int, env_batch: int) -> int:
    """Frame slots for `capacity` transitions: one frame per transition, plus room for the extra frames of
    episode starts (up to C - 1 each: 1/16 of the capacity, enough for episodes of 48+ steps at C = 4), for the
    frames of stacks and n-step windows still open in every env, and for the writes in flight."""
    return capacity + capacity // 16 + (n_step + stack + 2) * num_envs + 2 * env_batch * (stack + 1)


def bytes_per_transition(example: Transition, capacity: int, num_envs: int, n_step: int, env_batch: int,
                         frames: bool) -> float:
    """Host bytes per transition slot of a partition of `capacity` slots, computed without allocating it: stacks as
    they come (`frames=False`), or each frame once (`frames=True`, the frame ring included)."""
    obs = np.asarray(example.obs)
    rest = sum(np.asarray(x).nbytes for x in example[1:4])
    if not frames:
        return float(2 * obs.nbytes + rest)
    stack = obs.shape[0]
    ring = frame_capacity(capacity, stack, num_envs, n_step, env_batch) * (obs.nbytes // stack)
    return (ring + capacity * (2 * stack * np.dtype(np.int64).itemsize + rest)) / capacity


class FramePartition(Partition):
    """A `Partition` that stores each frame once and returns full observation stacks.

    Args:
        example: a `Transition` of single items with `obs` of shape `[C, H, W]`.
        capacity: transition slots.
        write_margin: most transitions one `add` writes.
        frames: frame slots (see `frame_capacity`).
        frame_margin: most frames one `add` writes (`env batch * (C + 1)`).
    """

    def __init__(self, example: Transition, capacity: int, write_margin: int, frames: int, frame_margin: int) -> None:
        obs = np.asarray(example.obs)
        if obs.ndim != 3:
            raise ValueError(f"frame storage needs [C, H, W] observations, got shape {obs.shape}")
        self.stack, self.frame_shape = obs.shape[0], obs.shape[1:]
        pointers = np.zeros(self.stack, np.int64)
        super().__init__(example._replace(obs=pointers, next_obs=pointers), capacity, write_margin)
        self.item = [(np.shape(x), np.asarray(x).dtype) for x in example]  # gather returns full stacks
        self.frames = np.zeros((frames, *self.frame_shape), obs.dtype)
        self.frame_margin = frame_margin
        self.frames_committed = 0  # sequence number of the next frame
        self.frame_floor = 0  # no frame below this is read (set when restored from a live snapshot)

    def add(self, batch: FrameBatch) -> None:  # type: ignore[override]  # frames and frame-number transitions
        """Stores new frames, then the transitions that point at them. Called by the owning actor only."""
        m = len(batch.frames)
        if m > self.frame_margin:
            raise ValueError(f"add of {m} frames exceeds the frame margin {self.frame_margin}")
        cap = len(self.frames)
        slots = (self.frames_committed + np.arange(m)) % cap
        self.frames[slots] = batch.frames
        self.frames_committed += m  # published before any transition that points at these frames
        if batch.transitions is not None:
            super().add(batch.transitions)

    def bytes_per_transition(self) -> float:
        """Host bytes of this partition per transition slot (frames included)."""
        ring = sum(x.nbytes for x in self.data)
        return (ring + self.frames.nbytes) / self.capacity

    def gather(self, seqs: np.ndarray, rows: np.ndarray, out: list[np.ndarray]) -> None:
        slots = seqs % self.capacity
        cap = len(self.frames)
        for field, (dst, src) in enumerate(zip(out, self.data)):
            if field in (0, 4):  # obs, next_obs: [N, C] frame numbers -> [N, C, H, W] frames, straight into dst
                take_rows(self.frames, src[slots] % cap, dst, rows)
            else:
                take_rows(src, slots, dst, rows)

    def unsafe(self, seqs: np.ndarray) -> np.ndarray:
        bad = super().unsafe(seqs)
        slots = seqs % self.capacity
        # The oldest frame of an item is the first of its obs stack (stacks only move forward in frame numbers).
        oldest = np.minimum(self.data.obs[slots, 0], self.data.next_obs[slots, 0])
        low = max(self.frame_floor, self.frames_committed + self.frame_margin - len(self.frames))
        return bad | (oldest < low)

    def snapshot(self) -> dict[str, Any]:
        # Transitions first: each was published after its frames, so all of them point below `before`.
        saved = super().snapshot()
        before = self.frames_committed
        frames = self.frames.copy()
        after = self.frames_committed
        floor = max(self.frame_floor, after + self.frame_margin - len(self.frames), 0)
        return {**saved, "frames": frames, "frames_committed": np.int64(before), "frame_floor": np.int64(floor)}

    def check(self, saved: dict[str, Any]) -> None:
        """As `Partition.check`, and a stored transition must not point at a frame the snapshot lacks (one torn by
        a writer)."""
        super().check(saved)
        check_saved(saved, ("frames_committed", "frame_floor"), [("frames", self.frames)])
        committed, floor = int(saved["committed"]), int(saved["floor"])
        slots = np.arange(max(floor, committed - self.capacity, 0), committed) % self.capacity
        newest = max(int(saved[f][slots].max(initial=-1)) for f in ("obs", "next_obs"))
        if newest >= int(saved["frames_committed"]):
            raise ValueError(f"the saved replay holds transitions that point at frame {newest}, past its "
                             f"{int(saved['frames_committed'])} saved frames (a snapshot torn by a writer)")

    def load(self, saved: dict[str, Any]) -> None:
        super().load(saved)
        self.frames[...] = saved["frames"]
        self.frames_committed, self.frame_floor = int(saved["frames_committed"]), int(saved["frame_floor"])


class FrameWriter(NStepWriter):
    """n-step transitions of frame stacks, written as single frames and frame numbers into a `FramePartition`.

    An `NStepWriter` over frame numbers: `step` takes frame stacks as `NStepWriter.step` does, and what it returns
    goes to `partition.add` (the actor does both, on its own thread, so the frame numbers it hands out are the
    partition's next ones).

    Args:
        num_envs: envs of the actor.
        n, gamma: n-step returns.
        partition: the actor's partition.
        action_shape, action_dtype: one step's action.
    """

    def __init__(self, num_envs: int, n: int, gamma: float, partition: FramePartition,
                 action_shape: tuple[int, ...] = (), action_dtype: npt.DTypeLike = np.int32) -> None:
        self.partition, self.stack = partition, partition.stack
        super().__init__(num_envs, n, gamma, (self.stack,), np.int64, action_shape, action_dtype)
        self.stacks = np.zeros((num_envs, self.stack), np.int64)  # each env's current obs as frame numbers
        self.fresh = np.ones(num_envs, bool)  # the env's next obs starts an episode: store its whole stack
        self.stepped = np.zeros(num_envs, bool)  # `stacks` holds the env's last stack (a new life may continue it)
        self.checked = np.zeros(num_envs, bool)  # the env's observations were seen to shift by one frame

    def reset(self) -> None:
        """Forgets pending steps and stacks (after the envs were reset from outside, e.g. on resume)."""
        super().reset()
        self.fresh[:] = True
        self.stepped[:] = False

    def step(  # type: ignore[override]  # returns frames with the transitions
        self,
        env_ids: np.ndarray,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> FrameBatch:
        """Adds one step of each env in `env_ids`; arguments as in `NStepWriter.step` (`obs`, `next_obs`:
        `[K, C, H, W]`). Returns the frames to store and the transitions completed."""
        if not self.checked[env_ids].all():
            self._check_shift(env_ids, obs, next_obs)
        base = self.partition.frames_committed
        fresh = self.fresh[env_ids]
        parts = []
        if fresh.any():
            ids, first = env_ids[fresh], obs[fresh]  # [F, C, H, W] stacks that start an episode
            new = np.ones(first.shape[:2], bool)
            new[:, 1:] = (first[:, 1:] != first[:, :-1]).reshape(len(first), self.stack - 1, -1).any(axis=2)
            cont = self._continues(ids, first)
            new[cont, :-1], new[cont, -1] = False, True  # a new life: only its newest frame is new
            pointers = base + np.cumsum(new.ravel()).reshape(new.shape) - 1
            pointers[cont, :-1] = self.stacks[ids[cont], 1:]
            self.stacks[ids] = pointers
            self.fresh[ids] = False
            parts.append(first[new])
            base += int(new.sum())
        obs_ptr = self.stacks[env_ids]
        next_ptr = np.concatenate([obs_ptr[:, 1:], (base + np.arange(len(env_ids)))[:, None]], axis=1)
        parts.append(next_obs[:, -1])
        t = super().step(env_ids, obs_ptr, action, reward, next_ptr, terminated, truncated)
        self.stacks[env_ids] = next_ptr
        self.stepped[env_ids] = True
        self.fresh[env_ids[terminated | truncated]] = True
        return FrameBatch(parts[0] if len(parts) == 1 else np.concatenate(parts), t)

    def _check_shift(self, env_ids: np.ndarray, obs: np.ndarray, next_obs: np.ndarray) -> None:
        """Each env's first step must shift its stack by one frame: what frames stored once rebuild."""
        shifted = (next_obs[:, :-1] == obs[:, 1:]).reshape(len(env_ids), -1).all(axis=1)
        if not shifted.all():
            raise UserError(
                f"replay.frame_dedup: the observations of shape {tuple(obs.shape[1:])} are not stacks of frames that "
                f"take one new frame per step (env {int(env_ids[~shifted][0])}'s first step did not shift its "
                f"stack; RGB frames or single images are no frame stacks); set replay.frame_dedup: false"
            )
        self.checked[env_ids] = True

    def _continues(self, ids: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Which first stacks `[F, C, H, W]` continue their env's last stack by one frame (EnvPool after a lost life,
        with `episodic_life`), compared bit for bit with its stored frames while they are still intact."""
        p = self.partition
        cont = self.stepped[ids] & (self.stack > 1)
        prev = self.stacks[ids, 1:]  # [F, C - 1] the last stack's newest frames
        cont &= prev.min(axis=1, initial=p.frames_committed) >= p.frames_committed + p.frame_margin - len(p.frames)
        if cont.any():
            same = p.frames[prev[cont] % len(p.frames)] == first[cont, :-1]
            cont[cont] = same.reshape(int(cont.sum()), -1).all(axis=1)
        return cont
