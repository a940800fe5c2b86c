"""Which GPUs each process of a multi-process run gets, from faked launcher environments (Slurm, Open MPI, MPICH,
PMIx): one process per node takes all of its GPUs, several split them by local rank, more processes than GPUs share
them with a memory fraction each."""

from __future__ import annotations

from typing import Any

import pytest

from jaxrl_dist.distributed import local_gpus
from jaxrl_dist.distributed.local_gpus import assign, for_launched_process, local_rank_and_size


def slurm(rank: int, tasks: str, gpus: str = "0,1,2,3,4,5,6,7") -> dict[str, str]:
    return {"SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank), "SLURM_NTASKS": "16", "SLURM_LOCALID": str(rank),
            "SLURM_STEP_TASKS_PER_NODE": tasks, "CUDA_VISIBLE_DEVICES": gpus}


@pytest.mark.parametrize("env, ids, fraction", [
    (slurm(0, "1(x4)"), list(range(8)), None),  # srun, one process per node: the whole node
    (slurm(1, "2(x2)"), [4, 5, 6, 7], None),  # two per node: half each
    (slurm(5, "8"), [5], None),  # one per GPU
    (slurm(11, "16"), [3], 0.45),  # two per GPU: each may take 0.9 / 2 of its memory
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
     [2], None),
    ({"MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}, [2, 3], None),
    ({"PMIX_LOCAL_RANK": "0", "PMIX_LOCAL_SIZE": "3", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, [0, 1], None),
])
def test_launched_processes_split_their_node(env: dict[str, str], ids: list[int], fraction: float | None) -> None:
    got = for_launched_process(env)
    assert got is not None and got.device_ids == ids and got.memory_fraction == fraction


def test_no_launcher_or_no_gpus_leaves_jax_alone() -> None:
    assert for_launched_process({"CUDA_VISIBLE_DEVICES": "0,1"}) is None  # a lone process
    assert for_launched_process({**slurm(0, "1"), "CUDA_VISIBLE_DEVICES": ""}) is None  # a CPU node
    assert assign(0, 1, 0) is None


def test_slurm_tasks_per_node_forms() -> None:
    base = {"SLURM_LOCALID": "0"}
    assert local_rank_and_size({**base, "SLURM_TASKS_PER_NODE": "4(x2),3"}) == (0, 4)
    assert local_rank_and_size({**base, "SLURM_STEP_TASKS_PER_NODE": "2,3", "SLURM_STEP_NODELIST": "a,b",
                                "SLURMD_NODENAME": "b"}) == (0, 3)
    assert assign(2, 3, 8) == assign(2, 3, 8)._replace(device_ids=[4, 5])
    assert "2 of the node's 8 GPUs unused" in assign(0, 3, 8).note


def test_memory_fraction_is_set_unless_the_user_did() -> None:
    env: dict[str, str] = {}
    local_gpus.apply_memory_fraction(assign(0, 4, 2), env)
    assert env == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}
    mine = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}
    local_gpus.apply_memory_fraction(assign(0, 4, 2), mine)
    assert mine["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.3"


class Started(Exception):
    """Raised by the fake `jax.distributed.initialize` with what it was given."""


def test_distributed_start_passes_the_node_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under srun with one process per node, `jax.distributed.initialize` gets every GPU of the node, not the one
    at the process's local rank that its Slurm detection would pick."""
    import jax

    from jaxrl_dist.distributed import processes

    for key, value in slurm(0, "1(x2)", "0,1,2,3").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    seen: dict[str, Any] = {}

    def fake(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise Started

    monkeypatch.setattr(jax.distributed, "initialize", fake)
    with pytest.raises(Started):
        processes.initialize(None, None, None, from_env=True, timeout_s=10)
    assert seen["local_device_ids"] == [0, 1, 2, 3] and seen["cluster_detection_method"] == "slurm"


GROUP = """
import os
from jax._src import xla_bridge  # where JAX keeps the jax_cuda_visible_devices option
from jaxrl_dist.distributed.groups import open_group
group = open_group(2, 30)
# One write per rank: the two ranks share the pipe, and print's pieces could interleave.
os.write(1, f"{group.rank} {xla_bridge.CUDA_VISIBLE_DEVICES.value} {os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION')}\\n".encode())
"""


@pytest.mark.skipif(not __import__("shutil").which("mpirun") or __import__("importlib").util.find_spec("mpi4jax")
                    is None, reason="needs mpirun and mpi4jax (the mpi extra)")
def test_mpi_groups_take_their_share_of_the_node() -> None:
    """Two groups (MPI ranks) on a node of 4 GPUs: each restricts JAX to its 2, by its rank on the node."""
    import sys

    from cli_runs import run, with_env

    proc = run(["mpirun", "-n", "2", sys.executable, "-c", GROUP], env=with_env(CUDA_VISIBLE_DEVICES="0,1,2,3"),
               timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(proc.stdout.split("\n")[:2]) == ["0 0,1 None", "1 2,3 None"], proc.stdout
