"""One learner mesh over two processes (`jax.distributed`, gloo CPU collectives), started by flags or by mpirun.

Every process has a subprocess timeout; a hung peer is killed with its run.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from cli_runs import ROOT, run, train, train_cmd, with_env
from test_groups import needs_mpi

from jaxrl_dist.distributed.processes import environment_launch
from jaxrl_dist.io.metrics import read_metrics

# 1-step returns: the expected update counts are then the replay ratio's alone (see test_groups.SHORT).
TINY = ("train.total_env_steps=4000", "eval.interval=0", "train.learning_starts=1000", "algo.n_step=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def together(cmds: list[list[str]], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Runs the commands side by side (one per process) and waits for all of them, killing any left at `timeout`."""
    env = with_env(JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    results = []
    for p, c in zip(procs, cmds):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return results


def flags(port: int, n: int, i: int) -> tuple[str, ...]:
    return ("--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i))


def test_one_update_matches_the_single_process_update(tmp_path):
    """The same global batch, fed half by each of two processes, gives the parameters and optimizer state one process
    gets from the whole batch."""
    script = str(ROOT / "tests" / "multiprocess_update.py")
    single = run([sys.executable, script, str(tmp_path / "one.npz")], timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    port = free_port()
    procs = together([[sys.executable, script, str(tmp_path / "two.npz"), f"127.0.0.1:{port}", "2", str(i)]
                      for i in range(2)], timeout=120)
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one.files == two.files
    for key in one.files:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6)


def test_two_processes_train_together_and_rank_0_writes(tmp_path):
    port = free_port()
    procs = together([train_cmd(tmp_path, "mp", *TINY, extra=flags(port, 2, i)) for i in range(2)])
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    assert "experiment:" in procs[0].stdout and "experiment:" not in procs[1].stdout
    last = read_metrics(tmp_path / "mp" / "metrics.jsonl")[-1]
    # The updates one process would make: replay_ratio 0.5 x (4000 - 1000), in calls of 8.
    assert last["updates"] == 1500 // 8 * 8
    assert last["env_steps"] >= 4000
    assert last["groups/identical_state"] == 1.0
    assert (tmp_path / "mp" / "checkpoints").is_dir()
    # Every process restores from rank 0's checkpoint.
    procs = together([train_cmd(tmp_path, "mp", *TINY[1:], "train.total_env_steps=6000",
                                extra=(*flags(port + 1 if port < 65535 else port - 1, 2, i), "--resume"))
                      for i in range(2)])
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    assert read_metrics(tmp_path / "mp" / "metrics.jsonl")[-1]["updates"] > last["updates"]


@needs_mpi
def test_distributed_under_mpirun(tmp_path):
    """`--distributed` reads the launcher's environment (MPICH's PMI variables, through mpi4py)."""
    proc = run(["mpirun", "-n", "2", *train_cmd(tmp_path, "mpi", *TINY, extra=("--distributed",))], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 processes)" in proc.stdout
    assert read_metrics(tmp_path / "mpi" / "metrics.jsonl")[-1]["updates"] == 1500 // 8 * 8


@needs_mpi
def test_ppo_on_a_mesh_over_two_processes(tmp_path):
    """The on-policy path: each process feeds its envs' segments into one global update."""
    proc = run(["mpirun", "-n", "2", *train_cmd(tmp_path, "ppo", "train.total_env_steps=12000", "eval.interval=0",
                                                config=ROOT / "configs" / "ppo_cartpole.yaml",
                                                extra=("--distributed",))], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = read_metrics(tmp_path / "ppo" / "metrics.jsonl")[-1]
    assert last["env_steps"] >= 12000 and last["groups/identical_state"] == 1.0


def test_partial_flags_and_groups_are_refused(tmp_path):
    proc = train(tmp_path, "bad", extra=("--coordinator", "127.0.0.1:1234"))
    assert proc.returncode == 2 and "--num-processes" in proc.stderr
    proc = train(tmp_path, "bad", extra=("--coordinator", "127.0.0.1:1234", "--num-processes", "2",
                                         "--process-id", "2"))
    assert proc.returncode == 2 and "allowed: 0 to 1" in proc.stderr
    proc = train(tmp_path, "bad", "roles.groups.count=2", extra=("--distributed",))
    assert proc.returncode == 2 and "roles.groups.count" in proc.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("env, method", [
    ({"SLURM_JOB_ID": "7", "SLURM_NNODES": "2"}, None),  # after salloc, outside srun: one process
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, None),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}, "ompi"),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, "mpi4py"),
    ({}, None),
])
def test_launcher_detection(monkeypatch, env, method):
    for key in ("SLURM_JOB_ID", "SLURM_NNODES", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    found = environment_launch()
    assert (found and found[1]["cluster_detection_method"]) == method
