"""Groups over MPI: `mpirun -n 2 python -m jaxrl_dist.train` with `roles.groups.count: 2`, real mpich + mpi4jax.

Every run has a subprocess timeout; a hung collective would also be ended by the groups' own watchdog.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runs import DEFAULT, ROOT, command, fake_devices, run, train, train_cmd, with_env

from jaxrl_dist.io.metrics import read_metrics

HAVE_MPI = importlib.util.find_spec("mpi4jax") is not None and shutil.which("mpirun") is not None
if not HAVE_MPI and os.environ.get("JAXRL_REQUIRE_MPI") == "1":  # CI installs MPI: a missing install must fail
    raise RuntimeError("JAXRL_REQUIRE_MPI=1 but mpi4jax or mpirun is missing (see docs/benchmarks.md, 'Tested with')")
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="MPI groups need the mpi extra and mpi4jax (docs/benchmarks.md, 'Tested with')")

# A short run: 2 groups of 3,000 env steps each, updates from 1,000, no evaluation.
# 1-step returns, so that the expected update counts are the replay ratio's alone (n-step windows hold back n - 1
# env steps per env before the first update: `plan.fill`).
SHORT = ("train.total_env_steps=6000", "train.learning_starts=1000", "eval.interval=0", "roles.groups.count=2",
         "algo.n_step=1")


def mpirun(n: int, cmd: list[str], timeout: float = 300):
    return run(["mpirun", "-n", str(n), *cmd], timeout=timeout)


def final(exp: Path) -> dict:
    return read_metrics(exp / "metrics.jsonl")[-1]


@needs_mpi
def test_grads_sync_solves_cartpole(tmp_path):
    """Gradient all-reduce over 2 groups solves CartPole within the default budget, and the groups end with the same
    learner state; group 0 reports the env steps of both groups."""
    proc = mpirun(2, train_cmd(tmp_path, "grads", "roles.groups.count=2", "roles.groups.sync=grads"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "solved: eval return" in proc.stdout
    rows = read_metrics(tmp_path / "grads" / "metrics.jsonl")
    assert max(r["eval/episode_return"] for r in rows if "eval/episode_return" in r) >= 475
    assert rows[-1]["groups/identical_state"] == 1.0
    assert proc.stdout.count("experiment:") == 1  # only group 0 reports
    assert (tmp_path / "grads" / "checkpoints").is_dir()


@needs_mpi
def test_params_sync_runs_freely_and_ends_identical(tmp_path):
    """Parameter averaging every 16 updates: each group takes its share of the budget, both run the same number of
    updates, and after the last average the states are bit-identical."""
    proc = mpirun(2, train_cmd(tmp_path, "params", *SHORT, "roles.groups.sync=params", "roles.groups.interval=16",
                               "roles.learner.updates_per_call=8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = final(tmp_path / "params")
    assert last["groups/identical_state"] == 1.0
    assert last["env_steps"] >= 6000  # both groups' steps, merged by group 0
    assert last["updates"] == (3000 - 1000) // 2 // 8 * 8  # replay ratio 0.5 over each group's share


@needs_mpi
@pytest.mark.parametrize("target", [None, 20])
def test_overlapped_averages_end_identical(tmp_path, target):
    """`overlap`: averages run in the background; the groups still end with the same state, at the budget's end
    and when group 0's target return stops the run between rounds."""
    sets = (*SHORT, "roles.groups.sync=params", "roles.groups.overlap=true", "roles.groups.interval=16")
    if target is not None:
        sets = (*sets, "eval.interval=500", f"eval.target_return={target}", "train.total_env_steps=150000")
    proc = mpirun(2, train_cmd(tmp_path, "ov", *sets))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = final(tmp_path / "ov")
    assert last["groups/identical_state"] == 1.0
    if target is None:
        assert last["updates"] == (3000 - 1000) // 2 // 8 * 8
    else:
        assert "solved:" in proc.stdout


@needs_mpi
def test_long_overlapped_intervals_keep_training_finite(tmp_path):
    """Rounds 1,024 updates apart: each group's Adam moments change a lot between its snapshot and the round's
    completion, and the applied round must not turn them negative (their square root went NaN, and the loss with
    it, from the second round on)."""
    sets = ("roles.groups.count=2", "train.total_env_steps=20000", "train.learning_starts=1000", "eval.interval=0",
            "roles.groups.sync=params", "roles.groups.overlap=true", "roles.groups.interval=1024")
    proc = mpirun(2, train_cmd(tmp_path, "long", *sets))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path / "long" / "metrics.jsonl") if "train/loss" in r]
    assert rows and rows[-1]["updates"] >= 3 * 1024  # at least two rounds applied
    assert all(r["train/loss"] is not None and np.isfinite(r["train/loss"]) for r in rows)


@needs_mpi
def test_grads_over_groups_of_two_devices_match_one_mesh_of_four(tmp_path):
    """One `sync: grads` learner call in 2 groups of 2 (fake) devices, each group fed half of a global batch, gives
    the state one process gets on a mesh of 4 devices from the whole batch, and the same bits in both groups."""
    script = str(ROOT / "tests" / "multiprocess_update.py")
    one = run([sys.executable, script, str(tmp_path / "one.npz")], timeout=120, env=fake_devices(4))
    assert one.returncode == 0, one.stderr[-2000:]
    groups = run(["mpirun", "-n", "2", sys.executable, script, str(tmp_path / "g.npz"), "groups"], timeout=120,
                 env=fake_devices(2))
    assert groups.returncode == 0, groups.stderr[-2000:]
    ref, g0, g1 = (np.load(tmp_path / name) for name in ("one.npz", "g.npz", "g.1.npz"))
    assert ref.files == g0.files == g1.files
    for key in ref.files:
        np.testing.assert_array_equal(g0[key], g1[key])
        np.testing.assert_allclose(g0[key], ref[key], rtol=1e-5, atol=1e-6)


@needs_mpi
@pytest.mark.parametrize("sync", ["grads", "params", "overlap"])
def test_groups_of_two_learner_devices_end_identical(tmp_path, sync):
    """Each group's learner on a mesh of 2 devices: every sync mode runs its updates and ends with the same state in
    both groups."""
    mode = ("roles.groups.sync=grads",) if sync == "grads" else (
        "roles.groups.sync=params", "roles.groups.interval=16", f"roles.groups.overlap={sync == 'overlap'}")
    proc = run(["mpirun", "-n", "2", *train_cmd(tmp_path, sync, *SHORT, *mode, "roles.learner.devices=2")],
               timeout=300, env=fake_devices(3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mesh data=2" in run(train_cmd(tmp_path, "t", *SHORT, *mode, "roles.learner.devices=2",
                                          extra=("--print-topology",)), env=fake_devices(3)).stdout
    last = final(tmp_path / sync)
    assert last["groups/identical_state"] == 1.0
    assert last["updates"] == (3000 - 1000) // 2 // 8 * 8
    assert np.isfinite(last["train/loss"])


@needs_mpi
def test_early_stop_of_group_0_stops_every_group(tmp_path):
    """Group 0 reaches the target return between two parameter averages; the other group learns of it at its next
    sync point and the job ends with both groups agreeing on the final state."""
    proc = mpirun(2, train_cmd(tmp_path, "stop", "roles.groups.count=2", "roles.groups.sync=params",
                               "roles.groups.interval=64", "eval.interval=500", "eval.target_return=20",
                               "train.learning_starts=500"), timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "solved:" in proc.stdout
    last = final(tmp_path / "stop")
    assert last["groups/identical_state"] == 1.0
    assert last["env_steps"] < 150_000


@needs_mpi
@pytest.mark.parametrize("sync,devices", [("grads", 1), ("params", 1), ("grads", 2)])
def test_ppo_in_groups(tmp_path, sync, devices):
    """The on-policy path in groups: each group feeds its own segments (split over its learner devices); the
    learners average gradients (or every 4 updates their states) and end identical."""
    proc = run(["mpirun", "-n", "2", *train_cmd(tmp_path, sync, "roles.groups.count=2", f"roles.groups.sync={sync}",
                                                "roles.groups.interval=4", "train.total_env_steps=12000",
                                                "eval.interval=0", f"roles.learner.devices={devices}",
                                                config=ROOT / "configs" / "ppo_cartpole.yaml")],
               timeout=300, env=fake_devices(3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = final(tmp_path / sync)
    assert last["groups/identical_state"] == 1.0
    assert last["env_steps"] >= 12000 and last["updates"] >= 20  # 6,000 env steps per group: 23 segments of 8 x 32


@needs_mpi
@pytest.mark.parametrize("devices", [1, 2])
def test_sac_in_groups(tmp_path, devices):
    """SAC's per-update noise is folded with the group (shard_key), its gradients averaged over the groups; with 2
    learner devices per group its three reductions per update (critic, actor, temperature) are three host
    allreduces, met in the same order by both groups."""
    proc = run(["mpirun", "-n", "2", *train_cmd(tmp_path, "sac", "roles.groups.count=2", "train.total_env_steps=4000",
                                                "train.learning_starts=1000", "eval.interval=0",
                                                f"roles.learner.devices={devices}",
                                                config=ROOT / "configs" / "sac_pendulum.yaml")],
               timeout=300, env=fake_devices(3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = final(tmp_path / "sac")
    assert last["groups/identical_state"] == 1.0 and last["updates"] > 0
    assert np.isfinite(last["train/critic_loss"])


@needs_mpi
def test_resume_of_a_groups_run(tmp_path):
    proc = mpirun(2, train_cmd(tmp_path, "res", *SHORT, "roles.groups.sync=grads"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = final(tmp_path / "res")
    proc = mpirun(2, train_cmd(tmp_path, "res", *SHORT[1:], "train.total_env_steps=10000", "roles.groups.sync=grads",
                               extra=("--resume",)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = final(tmp_path / "res")
    assert last["env_steps"] >= 10_000 and last["updates"] > first["updates"]
    assert last["groups/identical_state"] == 1.0


@needs_mpi
def test_sigterm_checkpoints_every_group_and_prints_the_resume_line(tmp_path):
    """SIGTERM to mpirun reaches both groups: they agree to stop, group 0 checkpoints, exit 143, and the resume line
    carries the mpirun prefix."""
    cmd = ["mpirun", "-n", "2", *train_cmd(tmp_path, "term", "roles.groups.count=2", "eval.target_return=null",
                                            "train.total_env_steps=10000000")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics = tmp_path / "term" / "metrics.jsonl"
        while not (metrics.is_file() and any(r.get("updates", 0) > 0 for r in read_metrics(metrics))):
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start training"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "continue with: mpirun -n 2 " in out and "--resume" in out
    assert any((tmp_path / "term" / "checkpoints").iterdir())


CRASHING_ENV = textwrap.dedent('''
    import os
    import numpy as np
    from jaxrl_dist.envs import BaseEnv, Box, Discrete

    class CrashInGroup1(BaseEnv):
        """Crashes after 200 steps in group 1 (rank 1), runs forever in group 0."""
        observation_space = Box(-1.0, 1.0, shape=(2,))
        action_space = Discrete(2)

        def __init__(self):
            self.rank = int(os.environ.get("PMI_RANK", "0"))
            self.steps = 0

        def reset(self, seed=None):
            return np.zeros(2, np.float32)

        def step(self, action):
            self.steps += 1
            if self.rank == 1 and self.steps > 200:
                raise RuntimeError("env of group 1 broke")
            return np.zeros(2, np.float32), 0.0, False, self.steps % 50 == 0
''')


@needs_mpi
def test_a_crashed_group_ends_the_job(tmp_path):
    (tmp_path / "crash_env.py").write_text(CRASHING_ENV)
    cmd = train_cmd(tmp_path, "crash", "env.id=crash_env:CrashInGroup1", "env.num_envs=2",
                    "train.total_env_steps=10000000", "train.learning_starts=100", "replay.batch_size=32",
                    "eval.interval=0", "roles.groups.count=2")
    start = time.monotonic()
    proc = run(["mpirun", "-n", "2", *cmd], timeout=120, env=with_env(PYTHONPATH=str(tmp_path)))
    assert time.monotonic() - start < 60
    assert proc.returncode != 0
    assert "env of group 1 broke" in proc.stderr
    assert "aborting all 2 groups" in proc.stderr


def test_groups_without_mpirun_is_a_clear_error(tmp_path):
    proc = train(tmp_path, "alone", "roles.groups.count=2")
    assert proc.returncode == 2
    assert "mpirun -n 2" in proc.stderr and "roles.groups.count" in proc.stderr
    assert not (tmp_path / "alone").exists()


def test_groups_without_mpi_installed_names_the_extra(tmp_path):
    """With mpi4jax unimportable, the error says how to install it (nothing is written)."""
    code = ("import sys; sys.modules['mpi4jax'] = None; from jaxrl_dist.train import main; "
            "sys.exit(main(sys.argv[1:]))")
    args = train_cmd(tmp_path, "nompi", "roles.groups.count=2")[3:]  # drop `python -m jaxrl_dist.train`
    proc = run([sys.executable, "-c", code, *args])
    assert proc.returncode == 2
    assert "pip install -e '.[mpi]'" in proc.stderr
    assert not (tmp_path / "nompi").exists()


def test_groups_config_rules(tmp_path):
    proc = train(tmp_path, "bad", "roles.groups.count=2", "roles.groups.sync=params", "roles.groups.interval=12",
                 "roles.learner.updates_per_call=8")
    assert proc.returncode == 2 and "roles.groups.interval" in proc.stderr and "multiple of 8" in proc.stderr


def test_print_topology_shows_groups():
    proc = run(command("train", "--config", DEFAULT, "--print-topology", "--set", "roles.groups.count=2",
                       "--set", "roles.groups.sync=params"))
    assert proc.returncode == 0, proc.stderr
    assert "groups" in proc.stdout and "params" in proc.stdout


def test_background_round_keeps_second_moments_non_negative() -> None:
    """`avg + (cur - snap)` can take a shrinking non-negative leaf (Adam's `nu`) below zero, and its square root to
    NaN: such a leaf stays at or above the smaller of `avg` and `cur`; a leaf with both signs gets the plain
    correction."""
    from jaxrl_dist.distributed.groups import apply_round

    params = (np.array([1.0, -2.0], np.float32), np.array([0.5, -1.0], np.float32), np.array([3.0, -0.5], np.float32))
    nu = (np.array([1e-4, 2e-4], np.float32), np.array([1e-2, 1e-2], np.float32), np.array([1e-3, 3e-2], np.float32))
    avg, snap, cur = (np.concatenate([p, n]) for p, n in zip(params, nu))
    new = apply_round(avg, snap, cur, [2, 2])
    np.testing.assert_allclose(new[:2], params[0] + params[2] - params[1])  # signed leaf: avg + progress
    assert (avg[2:] + cur[2:] - snap[2:] < 0).any()  # the plain correction would go negative here
    np.testing.assert_allclose(new[2:], np.maximum(avg[2:] + cur[2:] - snap[2:], np.minimum(avg[2:], cur[2:])))
    assert (new[2:] > 0).all()


def test_overlap_warmup_compiles_what_the_rounds_call() -> None:
    """`OverlappedAverage.warmup` compiles the host round trip with the argument types a round uses (a numpy float32
    vector for `_unravel`), so that no round compiles during training."""
    from types import SimpleNamespace

    import jax

    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.algos.base import no_reduce
    from jaxrl_dist.config import load_config
    from jaxrl_dist.distributed.groups import OverlappedAverage, apply_round
    from jaxrl_dist.roles.graph import prepare

    cfg = load_config(DEFAULT, [])
    state = jax.jit(make_algorithm(prepare(cfg).spec, cfg, no_reduce).init)(jax.random.PRNGKey(0))
    o = OverlappedAverage(SimpleNamespace(overlap_comm=None, MPI=SimpleNamespace(SUM=None)))  # no round is posted
    o.warmup(state)
    sizes = (OverlappedAverage._ravel._cache_size(), OverlappedAverage._unravel._cache_size())
    flat = o._floats(state)  # what `complete` does with a finished round
    leaves = [x.size for x in jax.tree.leaves(state) if np.issubdtype(x.dtype, np.floating)]
    jax.block_until_ready(o._unravel(state, apply_round(flat, flat, flat, leaves).astype(np.float32)))
    assert (OverlappedAverage._ravel._cache_size(), OverlappedAverage._unravel._cache_size()) == sizes


def test_cpu_collective_limit_is_raised_above_the_groups_timeout(monkeypatch) -> None:
    """XLA:CPU kills a process whose devices wait 60 s in a collective; with a group's learner on several CPU devices
    they wait there while the first device waits for the other groups, so the limit goes above `timeout_s` (and a
    value the user set is kept)."""
    from jaxrl_dist.distributed.groups import CPU_COLLECTIVE_LIMIT_FLAG, raise_cpu_collective_limit

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    raise_cpu_collective_limit(300.0)
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=3 {CPU_COLLECTIVE_LIMIT_FLAG}=360"
    monkeypatch.setenv("XLA_FLAGS", f"{CPU_COLLECTIVE_LIMIT_FLAG}=30")
    raise_cpu_collective_limit(300.0)
    assert os.environ["XLA_FLAGS"] == f"{CPU_COLLECTIVE_LIMIT_FLAG}=30"
