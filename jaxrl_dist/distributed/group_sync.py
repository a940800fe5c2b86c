"""The collectives of one group's learner, entered in the same order in every group (the protocol of
`jaxrl_dist.distributed.groups`' module docstring): the stop-flag exchange, the gradient allreduce's watchdog, the
parameter averages (blocking or overlapped), and the final comparison of the groups' states."""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Callable, Protocol

import jax
import numpy as np

from jaxrl_dist.distributed.peers import Peers
from jaxrl_dist.distributed.mesh import LearnerMesh


class StepCounter(Protocol):
    """What the exchange reads and writes: this group's env steps, and the other groups' (the ratio limiter)."""

    @property
    def env_steps(self) -> int: ...

    peer_steps: int


class GroupSync:
    """The collectives of one group's learner, made in the same order in every group (see the module docstring).

    Args:
        group: this process's group.
        sync: "grads" or "params".
        interval: updates between averages (params).
        target_updates: the updates every group runs in all.
        stop_event: the run's stop flag: read as this group's wish to stop, set when another group stops.
        steps: this group's env-step counter; each exchange sends its `env_steps` and sets its `peer_steps` to the
            other groups' total.
        overlap: `sync: params` averages in the background (`OverlappedAverage`).
        placement: the group's learner devices (None: one device).
    """

    def __init__(self, group: Peers, sync: str, interval: int, target_updates: int, stop_event: threading.Event,
                 steps: StepCounter, overlap: bool = False, placement: LearnerMesh | None = None) -> None:
        self.group, self.sync, self.interval, self.target = group, sync, interval, target_updates
        self.stop_event, self.steps = stop_event, steps
        self.stopped = False  # a group raised the stop flag, and every group has seen it
        self.identical: bool | None = None  # set at the end: whether every group holds the same learner state
        self._average: Callable[[Any], Any] | None = None
        self._overlap: Any = None  # an OverlappedAverage (MPI groups with `overlap`)
        if sync == "params":
            self._average, self._overlap = group.averages(placement, overlap)

    def meet(self, what: str) -> None:
        """Waits until every group is here (a host exchange, under the watchdog): before the first device
        collective, so that no group's devices wait there for a peer that is still starting up."""
        self.group.agree(True, what)

    def warmup(self, state: Any) -> None:
        """Compiles the sync point's own calls before training, results discarded (called once by every group, with
        the learner's warm-up, so that a blocking average's collective is matched): the first average then does
        not stall the learner, and through the overlap the other groups, while it compiles."""
        if self._overlap is not None:
            self._overlap.warmup(state)
        elif self._average is not None:
            self._average_now(state)

    def exchange(self, stop: bool) -> bool:
        """Swaps (stop flag, env steps) with the other groups; True (and the run's stop flag set) if any stops."""
        own = self.steps.env_steps
        recv = self.group.host_sum(np.array([int(stop), own], np.int64), "stop-flag exchange")
        self.steps.peer_steps = int(recv[1]) - own
        if recv[0] > 0:
            self.stopped = True
            self.stop_event.set()
        return self.stopped

    def before_call(self) -> bool:
        """Whether the next learner call goes ahead (grads: every group agrees to it first)."""
        if self.stopped:
            return False
        return self.sync != "grads" or not self.exchange(self.stop_event.is_set())

    def after_call(self, state: Any, updates: int) -> Any:
        """The state after the call's sync point (params: averaged every `interval` updates and after the last)."""
        if self._overlap is not None:
            return self._overlapped(state, updates)
        if self._average is None or (updates % self.interval and updates < self.target):
            return state
        self.exchange(self.stop_event.is_set())  # first: every group is here when the average starts
        return self._average_now(state)

    def _average_now(self, state: Any) -> Any:
        assert self._average is not None
        with self.group.collective("parameter average"):
            return jax.block_until_ready(self._average(state))

    def _overlapped(self, state: Any, updates: int) -> Any:
        o = self._overlap
        assert o is not None
        if updates % self.interval and updates < self.target:
            return state
        flags = None
        if o.pending is not None:
            state, flags = o.complete(state)
            self.steps.peer_steps = int(flags[1]) - self.steps.env_steps
        if updates >= self.target or (flags is not None and flags[0] > 0):
            return self._finish_overlap(state)
        o.post(state, 0, self.steps.env_steps)
        return state

    def _finish_overlap(self, state: Any) -> Any:
        assert self._overlap is not None
        own = self.steps.env_steps
        state, total = self._overlap.finish(state, own)
        self.steps.peer_steps = total - own
        self.stopped = True
        self.stop_event.set()
        return state

    def leave(self, state: Any, updates: int) -> Any:
        """The learner stops: if the others do not know it yet (it stops before `target_updates`, and no exchange
        carried a stop), one last sync point with the stop flag up, matching the others' next one."""
        if self._overlap is not None:
            return state if self._overlap.done else self._finish_overlap(state)
        if self.stopped or updates >= self.target:
            return state
        self.exchange(True)
        return state if self._average is None else self._average_now(state)

    def compare(self, state: Any) -> bool:
        """Whether every group holds the same floating-point learner state, bit for bit (a digest per group,
        gathered on the host, with the final env steps of each). Called once at the end by every group."""
        floats = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))
                  if np.issubdtype(np.asarray(x).dtype, np.floating)]
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in floats)).digest()
        words = np.frombuffer(digest[:16], np.int32).astype(np.int64)  # 128 bits, small enough for any sum
        own = self.steps.env_steps
        rows = self.group.gather(np.append(words, own), "final state comparison")
        self.steps.peer_steps = int(rows[:, -1].sum()) - own  # the final env-step count of the run
        self.identical = bool((rows[:, :-1] == rows[0, :-1]).all())
        return self.identical

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a learner call; with `grads` (whose gradients meet the other groups') under the watchdog."""
        if self.sync != "grads":
            return fn(*args)
        with self.group.collective("gradient allreduce"):
            return jax.block_until_ready(fn(*args))
