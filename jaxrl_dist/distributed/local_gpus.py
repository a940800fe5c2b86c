"""Which of a node's GPUs each process of a multi-process run uses, decided before JAX starts its GPU backend.

Left alone, JAX narrows every process of a `jax.distributed` run launched by srun, mpirun or another PMI launcher
to the one GPU at its local rank (`jax.distributed.initialize`'s cluster detection sets `local_device_ids` to
`[local rank]`), so a node of 8 GPUs run by one process per node would train on one GPU; and every MPI group (a
process of its own, without `jax.distributed`) sees all of its node's GPUs and takes the first. Here the node's
GPUs are split evenly among the processes on the node, by local rank:

- one process per node: all of its GPUs;
- `L` processes on `G` GPUs with `L <= G`: `G // L` consecutive GPUs each (the rest unused, said once);
- more processes than GPUs: process `r` on GPU `r mod G`, and each process may take only its share of the GPU's
  memory (`XLA_PYTHON_CLIENT_MEM_FRACTION`, unless set already), so that they fit.

The local rank and size come from the launcher's environment (Slurm, Open MPI, MPICH / Hydra, PMIx), or for MPI
groups from MPI itself (a node-local communicator); the GPUs from `CUDA_VISIBLE_DEVICES`, else `nvidia-smi`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from typing import NamedTuple

MEMORY_SHARE = 0.9  # of a GPU's memory, split between the processes that share it

# (local rank, local size) variables of the launchers, in the order they are tried.
LOCAL_VARIABLES = (
    ("SLURM_LOCALID", None),  # size from SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE
    ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH's Hydra
    ("PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
    ("PMI_LOCAL_RANK", "PMI_LOCAL_SIZE"),
)


class Assignment(NamedTuple):
    """A process's GPUs: indices among the GPUs it sees, and its share of each one's memory (None: JAX's
    default)."""

    device_ids: list[int]
    memory_fraction: float | None
    note: str = ""


def local_rank_and_size(env: Mapping[str, str]) -> tuple[int, int] | None:
    """This process's rank among the processes of its node, and their number, from the launcher's variables."""
    for rank_key, size_key in LOCAL_VARIABLES:
        if rank_key not in env:
            continue
        if size_key is None:  # Slurm: tasks on this node, e.g. "4" or "4(x2),3" (this node's count first)
            tasks = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1"
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or ""
            size = _slurm_tasks_here(tasks, env.get("SLURMD_NODENAME", ""), nodes)
        else:
            size = int(env.get(size_key, "1"))
        return int(env[rank_key]), size
    return None


def _slurm_tasks_here(tasks: str, node: str, nodelist: str) -> int:
    """This node's task count from Slurm's compressed per-node list ("4(x2),3"): where the node's position in the
    node list cannot be told (a compressed node list), the first count (nodes are usually filled alike)."""
    counts: list[int] = []
    for part in tasks.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            counts += [int(m.group(1))] * int(m.group(2) or 1)
    names = nodelist.split(",") if nodelist and "[" not in nodelist else []
    if node in names and len(names) == len(counts):
        return counts[names.index(node)]
    return counts[0] if counts else 1


def visible_gpus(env: Mapping[str, str]) -> int:
    """How many GPUs this process sees: `CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L` (0 without either)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def assign(local_rank: int, local_size: int, gpus: int) -> Assignment | None:
    """The GPUs of process `local_rank` of `local_size` on a node of `gpus` (None without GPUs)."""
    if gpus <= 0 or local_size <= 0:
        return None
    if local_size <= gpus:
        per = gpus // local_size
        unused = gpus - per * local_size
        note = f"{unused} of the node's {gpus} GPUs unused by {local_size} processes" if unused else ""
        return Assignment(list(range(local_rank * per, (local_rank + 1) * per)), None, note)
    sharing = -(-local_size // gpus)
    return Assignment([local_rank % gpus], round(MEMORY_SHARE / sharing, 3),
                      f"{local_size} processes share {gpus} GPUs: up to {sharing} per GPU")


def apply_memory_fraction(assignment: Assignment, env: MutableMapping[str, str] | None = None) -> None:
    """Sets `XLA_PYTHON_CLIENT_MEM_FRACTION` for processes that share a GPU, unless the user set it."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    if assignment.memory_fraction is not None and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in target:
        target["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(assignment.memory_fraction)


def for_launched_process(env: Mapping[str, str] | None = None) -> Assignment | None:
    """The assignment of a process started by srun, mpirun or a PMI launcher (None: no launcher, or no GPUs)."""
    env = os.environ if env is None else env
    local = local_rank_and_size(env)
    if local is None:
        return None
    return assign(local[0], local[1], visible_gpus(env))


def restrict_cuda_devices(device_ids: list[int]) -> None:
    """Makes JAX's GPU backend use only `device_ids` (ordinals among the GPUs the process sees, as
    `jax.distributed.initialize`'s `local_device_ids` are), before it starts."""
    import jax

    jax.config.update("jax_cuda_visible_devices", ",".join(str(i) for i in device_ids))
