"""The learner across devices (fake CPU devices): the same global batch gives the same update on 1, 2 and 8."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from cli_runs import command, fake_devices, run, train, with_env
from test_groups import needs_mpi

# Fake devices must be configured before JAX starts, so the check runs in its own process.
SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jaxrl_dist.algos import Transition, make_algorithm
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed import LearnerMesh, fused_update
    from jaxrl_dist.envs import EnvSpec

    assert jax.device_count() == 8, jax.devices()
    spec = EnvSpec((4,), "float32", "discrete", 2, (), (), (), 0)
    rng = np.random.default_rng(0)
    K, B = 3, 64
    batches = Transition(rng.normal(size=(K, B, 4)).astype(np.float32), rng.integers(0, 2, (K, B)).astype(np.int32),
                         rng.normal(size=(K, B)).astype(np.float32), np.full((K, B), 0.99, np.float32),
                         rng.normal(size=(K, B, 4)).astype(np.float32))
    for name, net, algo_cfg in [
        ("dqn", {"hidden": [32, 32]}, {"max_grad_norm": 0.5}),  # clipping: the norm of the mean gradient matters
        ("dqn+normalize_obs", {"hidden": [32, 32], "normalize_obs": True}, {"target_update": "polyak"}),
        ("clipped_double_q", {"hidden": [16]}, {"name": "examples.extending.clipped_double_q:CLIPPED_DOUBLE_Q"}),
    ]:
        cfg = build({"network": net, "algo": algo_cfg})
        out = {}
        for n in (1, 2, 8):
            place = LearnerMesh.over(jax.devices()[:n])
            algo = make_algorithm(spec, cfg, place.grad_reduce)
            state = jax.device_put(algo.init(jax.random.PRNGKey(0)), place.replicated)
            state, metrics = fused_update(algo.update, place)(state, jax.device_put(batches, place.batches))
            assert len(jax.tree.leaves(state)[0].devices()) == n
            out[n] = jax.device_get((state, metrics))
        for n in (2, 8):
            for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(out[n])):
                np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), rtol=1e-5,
                                           atol=1e-6, err_msg=f"{name}: 1 vs {n} devices")
        print(name, "ok")

    # SAC samples policy noise per transition: each shard must draw its own, and the replicated state must stay
    # the same on every device.
    from jax.sharding import PartitionSpec as P
    from jaxrl_dist.distributed.mesh import axis_mean
    place = LearnerMesh.over(jax.devices()[:2])
    draws = jax.jit(jax.shard_map(lambda k: jax.random.normal(axis_mean.fold_in_shard(k[0]), (1, 3)),
                                  mesh=place.mesh, in_specs=P(), out_specs=P("data"), check_vma=False))(
        jax.random.PRNGKey(0)[None])
    assert not np.allclose(draws[0], draws[1]), draws
    spec = EnvSpec((3,), "float32", "continuous", 0, (1,), (-2.0,), (2.0,), 0)
    cfg = build({"algo": {"name": "sac"}, "network": {"hidden": [16]}})
    algo = make_algorithm(spec, cfg, place.grad_reduce)
    state = jax.device_put(algo.init(jax.random.PRNGKey(0)), place.replicated)
    sac_batches = Transition(rng.normal(size=(K, B, 3)).astype(np.float32),
                             rng.uniform(-2, 2, (K, B, 1)).astype(np.float32), rng.normal(size=(K, B)).astype(np.float32),
                             np.full((K, B), 0.99, np.float32), rng.normal(size=(K, B, 3)).astype(np.float32))
    state, metrics = fused_update(algo.update, place)(state, jax.device_put(sac_batches, place.batches))
    for leaf in jax.tree.leaves(state):
        copies = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1]) and np.all(np.isfinite(copies[0]))
    print("sac", "ok")
""")


def test_update_is_the_same_on_1_2_and_8_devices() -> None:
    proc = run([sys.executable, "-c", SCRIPT], env=fake_devices(8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["dqn", "ok", "dqn+normalize_obs", "ok", "clipped_double_q", "ok", "sac", "ok"]


def test_one_actor_device_and_four_learner_devices_solve_cartpole(tmp_path: Path) -> None:
    """The default DQN config with its actor on one and its learner on four of 8 fake devices solves CartPole."""
    proc = train(tmp_path, "split", "roles.actor.devices=cpu:0", "roles.learner.devices=[cpu:1,cpu:2,cpu:3,cpu:4]",
                 env=fake_devices(8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "solved:" in proc.stdout, proc.stdout[-2000:]


def test_impossible_learner_placement_is_a_one_line_error(tmp_path: Path) -> None:
    proc = train(tmp_path, "x", "roles.learner.devices=4", env=with_env(JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "roles.learner.devices" in proc.stderr and "xla_force_host_platform_device_count" in proc.stderr
    assert not (tmp_path / "x").exists()
    odd = train(tmp_path, "x", "roles.learner.devices=3")
    assert odd.returncode == 2 and "does not split over 3 learner devices (roles.learner.devices)" in odd.stderr
    old = train(tmp_path, "x", "roles.learner.num_devices=2")
    assert old.returncode == 2 and "replaced by roles.learner.devices" in old.stderr


def test_print_topology_shows_devices_and_per_device_batch(tmp_path: Path) -> None:
    proc = train(tmp_path, "t", "roles.learner.devices=4", "roles.actor.count=2",
                 extra=("--print-topology",), env=fake_devices(5))
    assert proc.returncode == 0, proc.stderr
    assert "2 lock-free partition(s) of 50000 transitions" in proc.stdout
    assert "on cpu:1, cpu:2, cpu:3, cpu:4, mesh data=4" in proc.stdout
    assert "32 transitions per device per update" in proc.stdout
    assert not any(tmp_path.iterdir())  # it only prints


def test_bench_scaling_reports_weak_and_strong_efficiency() -> None:
    proc = run(command("bench", "scaling", "--devices", "1,2", "--seconds", "0.3", "--global-batch", "128", "--json",
                       "--groups="), env=with_env(JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fake_devices"] is True and set(out["weak_ups"]) == {"1", "2"}
    assert out["weak_efficiency"]["1"] == 1.0 and out["strong_efficiency"]["1"] == 1.0
    assert all(v > 0 for v in out["weak_ups"].values()) and all(v > 0 for v in out["strong_ups"].values())


@needs_mpi
def test_bench_scaling_measures_mpi_groups() -> None:
    """The groups half: whole runs under mpirun with 1 and 2 groups, two independent single-group runs at once as
    the reference, rates and both efficiencies."""
    proc = run(command("bench", "scaling", "--devices", "1", "--seconds", "0.2", "--json", "--groups", "1,2",
                       "--group-steps", "12000", "--sync", "params", "--repeats", "1"), env=with_env(JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups = json.loads(proc.stdout.strip().splitlines()[-1])["groups"]
    runs, independent = groups["runs"]["params"], groups["independent"]
    assert set(runs) == {"1", "2"} and runs["1"]["weak_efficiency"] == 1.0 and set(independent) == {"2"}
    assert all(r["sps"] > 0 and r["ups"] > 0 for r in [*runs.values(), independent["2"]])
    # Two groups against two independent runs: the efficiency is their ratio of per-group update rates.
    assert runs["2"]["sync_efficiency"] == runs["2"]["ups"] / independent["2"]["ups"]
