"""Groups (TianJi's group parallelism): N copies of the actor+replay+learner graph, one per MPI rank, kept in sync
by mpi4jax collectives.

Each group samples its own envs into its own replay and runs its own learner. The learners meet in collectives:

- `sync: grads`: the update averages its gradients over the groups (`GroupMean`, an mpi4jax allreduce inside the
  jitted update), so every group applies the same step: synchronous data parallelism over groups. A group whose
  learner spans several local devices first averages over them (`pmean` over the mesh), then its first device
  alone sums over the groups (a host allreduce from an `io_callback`: mpi4jax's ordered effects are refused in a
  computation over several devices) and hands the sum to the others (`psum`).
- `sync: params`: groups update freely and average the floating-point leaves of their learner state every
  `interval` updates (an mpi4jax allreduce in its own jitted call, on the first learner device's copy, which is
  then copied to the others): parameters never drift more than `interval` updates apart, and are bit-identical
  after each average.

An MPI collective has to be entered by every rank the same number of times, in the same order, or the job hangs.
`GroupSync` (`jaxrl_dist.distributed.group_sync`) keeps that order:

- Every group runs the same number of updates, `target_updates`, fixed by the config (each group's share of the
  env-step budget times the replay ratio), whatever its env steps overshoot.
- A group that wants to stop early (solved, Ctrl-C, SIGTERM) raises a stop flag in a small host exchange (mpi4py)
  that happens at the same points in every group: before every learner call for `grads`, with every average for
  `params`. Every group sees the flag in the same exchange and stops after it. The exchange also carries the env
  steps of every group, which is how group 0 reports the run's total.
- A collective that waits longer than `roles.groups.timeout_s` (a peer hung) aborts the MPI job, as does a group
  whose role crashed (`Group.abort`): the job ends with a message instead of hanging.

The flag exchange and the mpi4jax collectives use separate communicators (clones of COMM_WORLD), so a host exchange
can never be matched against a device collective.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.flatten_util import ravel_pytree

from jaxrl_dist.distributed import local_gpus
from jaxrl_dist.distributed.mesh import DATA_AXIS, AxisMean, LearnerMesh
from jaxrl_dist.distributed.peers import POLL_S, Peers
from jaxrl_dist.errors import ConfigError

INSTALL_HINT = (
    "pip install -e '.[mpi]', then build mpi4jax against it (docs/benchmarks.md, 'Tested with': "
    "MPI4JAX_BUILD_MPICC=... pip install mpi4jax==0.9.1.post2)"
)



class Group(Peers):
    """This process's place among the MPI groups: its rank and the communicators.

    Args:
        count: the number of groups (MPI ranks).
        timeout_s: the longest a collective may wait for the other groups before the job is aborted.
    """

    def __init__(self, count: int, timeout_s: float) -> None:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        self.MPI = MPI
        self.host_comm = world.Clone()  # flag exchanges and agreements (mpi4py, host numpy)
        self.device_comm = world.Clone()  # mpi4jax collectives inside jitted calls
        self.overlap_comm = world.Clone()  # the background averages of `sync: params` with `overlap`
        super().__init__(world.Get_rank(), count, timeout_s)

    def host_sum(self, send: np.ndarray, what: str) -> np.ndarray:
        """The sum of `send` over the groups. It waits by polling with short sleeps rather than in MPI's busy loop,
        so that a group that arrives first leaves its core to its own actors while the others catch up."""
        recv = np.empty_like(send)
        with self.collective(what):
            request = self.host_comm.Iallreduce(send, recv, op=self.MPI.SUM)
            while not request.Test():
                time.sleep(POLL_S)
        return recv

    def grad_reduce(self, placement: LearnerMesh, groups: Any) -> Any:
        """`sync: grads` averages over the groups inside the update (`GroupMean`); `params` reduces over the
        group's own devices only."""
        return GroupMean(self, placement.size) if groups.sync == "grads" else placement.grad_reduce

    def averages(self, placement: LearnerMesh | None, overlap: bool) -> tuple[Any, OverlappedAverage | None]:
        """`sync: params`: the blocking average of learner states (`average_state`), or the overlapped one."""
        if overlap:
            return None, OverlappedAverage(self)
        return average_state(self, placement), None

    def abort(self, message: str, code: int = 1) -> None:
        """Ends every group of the job now (MPI_Abort), after printing `message`."""
        print(f"error: {message}; aborting all {self.count} {self.plural}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # The launcher forwards each rank's output through its own pipes, and MPI_Abort kills every rank at once:
        # without a pause, the traceback printed just before was sometimes lost (seen under mpirun on a busy CI).
        time.sleep(ABORT_GRACE_S)
        self.MPI.COMM_WORLD.Abort(code)
        os._exit(code)  # not reached where Abort works


def open_group(count: int, timeout_s: float) -> Group | None:
    """The process's `Group` when `roles.groups.count > 1` (None for one group), or a ConfigError saying what is
    missing: the `mpi` extra, or an MPI launcher with the right number of processes."""
    if count == 1:
        return None
    try:
        import mpi4jax  # noqa: F401 - checked here so that a missing build fails before anything starts
        from mpi4py import MPI
    except ImportError as e:
        raise ConfigError(f"config key 'roles.groups.count': value {count} needs MPI, and {e.name} is not "
                          f"installed: {INSTALL_HINT}") from None
    size = MPI.COMM_WORLD.Get_size()
    raise_cpu_collective_limit(timeout_s)
    if size != count:
        raise ConfigError(
            f"config key 'roles.groups.count': value {count}, but this process is one of {size} MPI process(es); "
            f"launch one process per group: mpirun -n {count} python -m jaxrl_dist.train ... (or srun -n {count})"
        )
    place_on_local_gpus(MPI)
    return Group(count, timeout_s)


def place_on_local_gpus(mpi: Any) -> None:
    """Gives this group its share of its node's GPUs, by its rank among the node's groups (an MPI communicator of
    the node's ranks), before JAX starts its GPU backend: each group a process of its own would otherwise take the
    node's first GPU (see `jaxrl_dist.distributed.local_gpus`)."""
    node = mpi.COMM_WORLD.Split_type(mpi.COMM_TYPE_SHARED)
    try:
        gpus = local_gpus.assign(node.Get_rank(), node.Get_size(), local_gpus.visible_gpus(os.environ))
    finally:
        node.Free()
    if gpus is None:
        return
    local_gpus.apply_memory_fraction(gpus)
    local_gpus.restrict_cuda_devices(gpus.device_ids)
    if gpus.note and mpi.COMM_WORLD.Get_rank() == 0:
        print(f"note: {gpus.note}", file=sys.stderr, flush=True)


ABORT_GRACE_S = 1.0  # see `Group.abort`
CPU_COLLECTIVE_LIMIT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"


def raise_cpu_collective_limit(timeout_s: float) -> None:
    """Raises XLA:CPU's own limit on a collective between a process's devices (60 s here, then it kills the process)
    above `timeout_s`, so that a hung peer ends the job through the watchdog's message instead. With a learner on
    several CPU devices, the other devices wait in a `psum` while the first waits for the other groups
    (`GroupMean`). XLA reads the flag when its CPU backend starts, which has not happened when groups open; a value
    already in XLA_FLAGS is kept."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_COLLECTIVE_LIMIT_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_COLLECTIVE_LIMIT_FLAG}={int(timeout_s) + 60}".strip()


class GroupMean:
    """The gradient reduction of `sync: grads`: the mean over the groups, one allreduce per update.

    The tree is flattened into one vector first: one collective per update instead of one per leaf.

    - One learner device per group: an mpi4jax allreduce inside the jitted update.
    - `shards` > 1 (the group's learner is a `data` mesh; the update runs under `shard_map`): the mean over the
      group's own devices (`pmean`), then the sum over the groups on the first device only, by a host allreduce
      called back from the computation, then a `psum` that gives the first device's sum to every device (the
      others add zeros, so every device holds the same bits). One collective per group and update, made by one
      device: MPI requires every group to enter the same collectives in the same order, which concurrent calls
      from several devices would not keep.

    An update that reduces several trees (SAC: critic, actor, temperature) makes one host allreduce for each, in
    the order XLA schedules them: the same in every group, which compiles the same program, though not necessarily
    the order of the source. Vectors of different sizes met in the wrong order would be an MPI error, not a silent
    mix.

    `fold_in_shard(key)` gives each group (and each of its devices) its own noise (see
    `jaxrl_dist.algos.base.shard_key`).
    """

    def __init__(self, group: Group, shards: int = 1) -> None:
        self.comm, self.count, self.rank = group.device_comm, group.count, group.rank
        self.shards, self.SUM = shards, group.MPI.SUM

    def __call__(self, tree: Any) -> Any:
        flat, unravel = ravel_pytree(tree)
        if self.shards == 1:
            import mpi4jax

            return unravel(mpi4jax.allreduce(flat, op=self.SUM, comm=self.comm) / self.count)
        flat = jax.lax.pmean(flat, DATA_AXIS)
        spec = jax.ShapeDtypeStruct(flat.shape, flat.dtype)
        first = jax.lax.axis_index(DATA_AXIS) == 0
        total = jax.lax.cond(first, lambda x: io_callback(self._host_sum, spec, x), jnp.zeros_like, flat)
        return unravel(jax.lax.psum(total, DATA_AXIS) / self.count)

    def _host_sum(self, flat: np.ndarray) -> np.ndarray:
        """The sum of the groups' vectors (called from the first device, under `GroupSync.call`'s watchdog). It
        polls with short sleeps, as `Group.host_sum` does."""
        send = np.ascontiguousarray(flat)
        recv = np.empty_like(send)
        request = self.comm.Iallreduce(send, recv, op=self.SUM)
        while not request.Test():
            time.sleep(POLL_S)
        return recv

    def fold_in_shard(self, key: jax.Array) -> jax.Array:
        key = jax.random.fold_in(key, self.rank)
        return key if self.shards == 1 else AxisMean.fold_in_shard(key)


def average_state(group: Group, placement: LearnerMesh | None = None) -> Callable[[Any], Any]:
    """A jitted `state -> state` whose floating-point leaves are averaged over the groups (one allreduce); integer
    leaves (counters, RNG keys) stay as they are. With a learner `placement` of several devices the average is
    taken on the first device's copy and copied to the others (an mpi4jax call runs on one device only)."""
    import mpi4jax

    def average(state: Any) -> Any:
        leaves, treedef = jax.tree.flatten(state)
        floats = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.floating)]
        flat, unravel = ravel_pytree([leaves[i] for i in floats])
        mean = unravel(mpi4jax.allreduce(flat, op=group.MPI.SUM, comm=group.device_comm) / group.count)
        for i, x in zip(floats, mean):
            leaves[i] = x
        return jax.tree.unflatten(treedef, leaves)

    one = jax.jit(average)
    if placement is None or placement.size == 1:
        return one

    def on_first_device(state: Any) -> Any:
        return placement.put_replicated(one(jax.tree.map(lambda x: x.addressable_data(0), state)))

    return on_first_device


class OverlappedAverage:
    """`sync: params` with `overlap`: the average of round r runs in the background while the groups train on.

    At each sync point a group completes the round it started one interval earlier and applies it as the average
    plus its own progress since (`avg(snap) + (state - snap)`, see `apply_round`), then starts the next round with
    its current state (an mpi4py `Iallreduce` of the host copy of its float leaves, and one of its stop flag and env
    steps). A group waits only for a peer more than one interval behind, so parameters are at most one interval
    stale, and they are identical only after the last round.

    Ending: a group that stops (its own stop, a peer's flag seen in a completed round, or the last update) enters
    `finish`: it posts rounds with its flag up until a round completes in which every group's flag is up, and takes
    that round's plain average, so that every group ends with the same state.
    """

    def __init__(self, group: Group) -> None:
        self.group, self.comm, self.SUM = group, group.overlap_comm, group.MPI.SUM
        self.pending: tuple[list[Any], np.ndarray, np.ndarray, np.ndarray] | None = None
        self.done = False

    @staticmethod
    @jax.jit
    def _ravel(state: Any) -> jax.Array:
        """The float leaves of `state` as one float32 vector (one device-to-host copy instead of one per leaf)."""
        floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
        return jnp.concatenate([x.astype(jnp.float32).ravel() for x in floats])

    @staticmethod
    @jax.jit
    def _unravel(state: Any, flat: jax.Array) -> Any:
        """`state` with its float leaves taken from `flat` (the inverse of `_ravel`, in one call)."""
        leaves, treedef = jax.tree.flatten(state)
        offset = 0
        for i, x in enumerate(leaves):
            if jnp.issubdtype(x.dtype, jnp.floating):
                leaves[i] = flat[offset:offset + x.size].reshape(x.shape).astype(x.dtype)
                offset += x.size
        return jax.tree.unflatten(treedef, leaves)

    def _floats(self, state: Any) -> np.ndarray:
        return np.asarray(jax.device_get(self._ravel(state)))

    def warmup(self, state: Any) -> None:
        """Compiles the host round trip (`_ravel`, `_unravel`) on `state`, result discarded: about 0.2 s on a
        CPU core that would otherwise stall the learner at its first round."""
        jax.block_until_ready(self._unravel(state, self._floats(state)))

    def post(self, state: Any, flag: int, steps: int) -> None:
        """Starts a round with this group's state, flag and env steps."""
        flat = self._floats(state)
        recv, flags = np.empty_like(flat), np.array([flag, steps], np.int64)
        recv_flags = np.empty_like(flags)
        requests = [self.comm.Iallreduce(flat, recv, op=self.SUM), self.comm.Iallreduce(flags, recv_flags, op=self.SUM)]
        self.pending = (requests, flat, recv, recv_flags)

    def complete(self, state: Any) -> tuple[Any, np.ndarray]:
        """Waits for the pending round; returns the state with the round applied and the summed (flags, steps)."""
        assert self.pending is not None
        requests, snap, recv, recv_flags = self.pending
        with self.group.collective("background parameter average"):
            while not self.group.MPI.Request.Testall(requests):
                time.sleep(POLL_S)
        self.pending = None
        sizes = [x.size for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
        new = apply_round(recv / self.group.count, snap, self._floats(state), sizes)
        return self._unravel(state, new.astype(np.float32)), recv_flags

    def finish(self, state: Any, steps: int) -> tuple[Any, int]:
        """Rounds with the flag up until every group's flag is up; returns the common final state and the env
        steps of all groups."""
        if self.pending is not None:
            state, _ = self.complete(state)
        while True:
            self.post(state, 1, steps)
            state, flags = self.complete(state)
            if flags[0] == self.group.count:
                self.done = True
                return state, int(flags[1])


def apply_round(avg: np.ndarray, snap: np.ndarray, cur: np.ndarray, sizes: list[int]) -> np.ndarray:
    """A completed background round applied to a group's current float leaves (flattened, leaf by leaf `sizes`):
    the round's average plus the group's own progress since its snapshot, `avg + (cur - snap)`.

    A leaf that is non-negative in both `avg` and `cur` (a second-moment estimate such as Adam's `nu`) is kept at
    or above the smaller of the two: the correction alone can take it below zero when it shrank since the
    snapshot, and the square root of a negative moment is NaN (seen with intervals of 1,024 updates)."""
    new = avg + (cur - snap)
    start = 0
    for size in sizes:
        seg = slice(start, start + size)
        if (avg[seg] >= 0).all() and (cur[seg] >= 0).all():
            np.maximum(new[seg], np.minimum(avg[seg], cur[seg]), out=new[seg])
        start += size
    return new
