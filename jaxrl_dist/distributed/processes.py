"""One learner mesh across processes (`jax.distributed`): bring-up from flags or the launcher's environment, and the
processes as `Peers` for the lockstep protocol of `jaxrl_dist.distributed.groups.GroupSync`.

Each process runs its own actors, replay and sampler; the learner's `data` mesh spans the learner devices of every
process, so one jitted update (an SPMD program) trains on the global batch, each process feeding its share with
`jax.make_array_from_process_local_data`. Such a call is a collective: every process must make it the same number of
times, which `GroupSync` (mode `grads`, the mesh's own `pmean` reducing the gradients) guarantees exactly as it
does for MPI groups. Process 0 evaluates and writes the experiment; every process restores from its checkpoints.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from jaxrl_dist.distributed import local_gpus
from jaxrl_dist.distributed.peers import Peers
from jaxrl_dist.errors import UserError

HEARTBEAT_S = 30  # the coordination service declares a silent process dead after this long


class Processes(Peers):
    """This process's place in a `jax.distributed` run (after `jax.distributed.initialize`)."""

    kind, plural = "process", "processes"

    def __init__(self, timeout_s: float) -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        # One device per process carries the host exchanges: a [count, n] array, one row per process.
        firsts = [min((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
                  for p in range(jax.process_count())]
        mesh = Mesh(np.array(firsts), ("proc",))
        self._rows = NamedSharding(mesh, P("proc"))
        self._sum = jax.jit(lambda x: x.sum(0), out_shardings=NamedSharding(mesh, P()))
        super().__init__(jax.process_index(), jax.process_count(), timeout_s)

    @property
    def mesh_processes(self) -> int:
        """Every process feeds its share of each batch into the one mesh."""
        return self.count

    def sync_mode(self, groups: Any) -> str:
        """Every learner call is a collective of the mesh (its own `pmean`), so the processes meet before each."""
        return "grads"

    def learner_devices(self, mine: list[Any]) -> list[Any]:
        """Every process's devices at the local positions of this one's (process by process)."""
        import jax

        platform = mine[0].platform
        local = [d for d in jax.local_devices() if d.platform == platform]
        positions = [local.index(d) for d in mine]
        devices = []
        for p in range(self.count):
            theirs = sorted((d for d in jax.devices() if d.process_index == p and d.platform == platform),
                            key=lambda d: d.id)
            devices += [theirs[i] for i in positions]
        return devices

    def host_sum(self, send: np.ndarray, what: str) -> np.ndarray:
        import jax

        row = np.asarray(send, np.int32)[None]  # int32: JAX runs without 64-bit types
        with self.collective(what):
            rows = jax.make_array_from_process_local_data(self._rows, row, (self.count, row.shape[1]))
            total = self._sum(rows)
            return np.asarray(total.addressable_data(0)).astype(np.int64)

    def abort(self, message: str, code: int = 1) -> None:
        # The others notice through their watchdog, or the coordination service's heartbeat, within timeouts.
        print(f"error: {message}; stopping process {self.rank} of {self.count}", file=sys.stderr, flush=True)
        os._exit(code)


def environment_launch() -> tuple[str, dict[str, Any]] | None:
    """What launched this process, from its environment: (`description`, `jax.distributed.initialize` keyword
    arguments), or None where no multi-process launcher is seen.

    - Slurm: inside an `srun` step (`SLURM_STEP_ID`, `SLURM_NTASKS`, `SLURM_PROCID`). After `salloc` alone
      (`SLURM_JOB_ID` set, no step) this is one process: None.
    - Open MPI: `OMPI_COMM_WORLD_SIZE` (jax's own detection).
    - MPICH and other PMI launchers: `PMI_SIZE` / `PMI_RANK`, through mpi4py (the coordinator address is broadcast
      from rank 0).
    """
    env = os.environ
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return f"Slurm step of {env['SLURM_NTASKS']} tasks", {"cluster_detection_method": "slurm"}
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return f"Open MPI job of {env['OMPI_COMM_WORLD_SIZE']} processes", {"cluster_detection_method": "ompi"}
    if int(env.get("PMI_SIZE", "1")) > 1:
        return f"PMI job of {env['PMI_SIZE']} processes", {"cluster_detection_method": "mpi4py"}
    return None


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None, from_env: bool,
               timeout_s: float) -> Processes | None:
    """Starts `jax.distributed` from explicit flags (all three) or, with `from_env`, from the launcher's environment;
    None where this is a single process. Must run before anything touches a JAX device.

    Raises:
        UserError: flags given in part, or a launcher that cannot be used (named in the message).
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise UserError("--coordinator, --num-processes and --process-id go together (or use --distributed to read "
                        "them from Slurm / Open MPI / MPICH)")
    if all(v is not None for v in explicit):
        assert num_processes is not None and process_id is not None
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process-id {process_id} is not allowed with --num-processes {num_processes}; "
                            f"allowed: 0 to {num_processes - 1}")
        kwargs: dict[str, Any] = {"coordinator_address": coordinator, "num_processes": num_processes,
                                  "process_id": process_id}
    elif from_env:
        found = environment_launch()
        if found is None:
            print("note: --distributed found no multi-process launcher (srun, mpirun) around this process; "
                  "running as one process", file=sys.stderr, flush=True)
            return None
        kwargs = found[1]
        gpus = local_gpus.for_launched_process()
        if gpus is not None:  # the node's GPUs split by local rank, not one GPU per process whatever the count
            kwargs["local_device_ids"] = gpus.device_ids
            local_gpus.apply_memory_fraction(gpus)
            if gpus.note:
                print(f"note: {gpus.note}", file=sys.stderr, flush=True)
    else:
        return None
    import jax

    # CPU devices of different processes talk through gloo; GPUs use NCCL on their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout_s),
                                   heartbeat_timeout_seconds=HEARTBEAT_S)
    except (RuntimeError, ValueError, ImportError) as e:
        raise UserError(f"jax.distributed could not start ({', '.join(f'{k}={v}' for k, v in kwargs.items())}): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Processes(timeout_s) if jax.process_count() > 1 else None
