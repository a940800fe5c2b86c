"""The processes of a run that train together (MPI groups or the processes of one `jax.distributed` mesh), as one
interface: rank, count, the host exchange, the watchdog over collectives, and what differs between the two kinds
(how gradients are reduced, which devices the learner mesh holds, how a batch is split). The roles ask these methods
instead of testing which kind they have.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    import jax

    from jaxrl_dist.algos.base import GradReduce
    from jaxrl_dist.distributed.mesh import LearnerMesh

POLL_S = 0.0002  # sleep between polls of a host exchange


class Peers:
    """The processes of a run that train together and must enter every collective together: MPI groups (`Group`)
    or the processes of one `jax.distributed` mesh (`jaxrl_dist.distributed.processes.Processes`).

    Holds the rank, the count, and a watchdog that aborts the job when a collective waits longer than `timeout_s`.
    Subclasses give the host exchange (`host_sum`) and the abort.
    """

    kind, plural = "group", "groups"  # how messages name them

    def __init__(self, rank: int, count: int, timeout_s: float) -> None:
        self.rank, self.count, self.timeout_s = rank, count, timeout_s
        self._waiting: tuple[str, float] | None = None  # (what, since) while inside a collective
        threading.Thread(target=self._watch, name=f"{self.kind}-watchdog", daemon=True).start()

    @property
    def lead(self) -> bool:
        """Rank 0 writes the experiment directory (metrics, checkpoints) and evaluates."""
        return self.rank == 0

    @property
    def mesh_processes(self) -> int:
        """Processes that share one learner mesh and split every batch (`jax.distributed`); 1 for MPI groups, each
        of which has a learner of its own."""
        return 1

    def sync_mode(self, groups: Any) -> str:
        """How the learners meet (`GroupSync`): "grads" or "params", from the `roles.groups` config section."""
        return str(groups.sync)

    def grad_reduce(self, placement: LearnerMesh, groups: Any) -> GradReduce:
        """The reduction the learner's update is built with: over its own devices (`placement.grad_reduce`), or
        over the groups too where they average gradients."""
        return placement.grad_reduce

    def learner_devices(self, mine: list[jax.Device]) -> list[jax.Device]:
        """The learner mesh's devices given this process's own (`roles.learner.device` and the next ones)."""
        return mine

    def host_sum(self, send: np.ndarray, what: str) -> np.ndarray:
        """The elementwise sum of an int64 vector over all ranks (every rank calls it at the same point)."""
        raise NotImplementedError

    def averages(self, placement: LearnerMesh | None, overlap: bool) -> tuple[Any, Any]:
        """`sync: params`: `(blocking average, overlapped average)`, one of them None (MPI groups only)."""
        raise NotImplementedError(f"{self.plural} do not average learner states")

    def abort(self, message: str, code: int = 1) -> None:
        """Ends every rank of the job now, after printing `message`."""
        raise NotImplementedError

    def gather(self, row: np.ndarray, what: str) -> np.ndarray:
        """`[count, n]`: every rank's int64 row (a sum of one-hot placed rows)."""
        rows = np.zeros((self.count, row.size), np.int64)
        rows[self.rank] = row
        return self.host_sum(rows.ravel(), what).reshape(self.count, row.size)

    @contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Marks a collective; the watchdog aborts the job if it lasts longer than `timeout_s`."""
        self._waiting = (what, time.monotonic())
        try:
            yield
        finally:
            self._waiting = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout_s / 4))
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[1] > self.timeout_s:
                self.abort(f"{self.kind} {self.rank}: no answer from the others in the {waiting[0]} for "
                           f"{self.timeout_s:g} s; one is hung or gone")

    def agree(self, ok: bool, what: str) -> bool:
        """True on every rank iff `ok` is true on every rank (a barrier: a failed start stops all ranks)."""
        send = np.array([0 if ok else 1], np.int64)
        return not self.host_sum(send, what)[0]
