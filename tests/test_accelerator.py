"""The accelerator path on CPU: parameters reach actors only once computed (asynchronous dispatch forced on, as a GPU
has it), the learner state is donated, several actor and learner devices are placed as configured (and `auto`
splits a box of accelerators as Cleanba does), and DQN and PPO still solve on 8 fake devices."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_runs import ROOT, fake_devices, run, train, with_env


def test_actors_never_wait_on_a_learner_call_in_flight(tmp_path: Path) -> None:
    """A slow learner (a 512x512 MLP, 32 updates per call, on its own fake device, one core) and an actor on another:
    with asynchronous dispatch the actor's mean policy-call time (the median over half-second intervals, which
    other load on the machine moves less than a mean) stays within 2x of its value in a run whose learner is off
    (its device kept as busy by other work: see tests/async_actor_probe.py), while each learner call takes over 10x
    longer. Before parameters were published only once ready, the actor's
    next call waited for the learner's whole call (mean policy call of ~40 ms against ~2.7 ms alone, measured)."""
    env = with_env(XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
                   JAX_PLATFORMS="cpu")
    proc = run([sys.executable, str(ROOT / "tests" / "async_actor_probe.py"), str(tmp_path)], env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    busy = sorted(out["busy_ms"])
    assert len(busy) >= 5 and out["updates"] >= 320, out
    assert out["learner_call_ms"] >= 10 * out["alone_ms"], out
    assert busy[len(busy) // 2] <= 2 * out["alone_ms"], out


DONATION = textwrap.dedent("""
    import jax, numpy as np
    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed import LearnerMesh, learner_call
    from jaxrl_dist.envs import EnvSpec
    from jaxrl_dist.replay.items import zero_samples

    spec = EnvSpec((4,), "float32", "discrete", 2, (), (), (), 0)
    for n, prioritized in ((1, False), (2, False), (1, True), (2, True)):
        cfg = build({"network": {"hidden": [16]}, "replay": {"prioritized": prioritized}})
        place = LearnerMesh.over(jax.devices()[:n])
        algo = make_algorithm(spec, cfg, place.grad_reduce)
        # built outside jit: the target parameters are the parameters' own arrays (the call copies one of them)
        state = jax.device_put(algo.init(jax.random.PRNGKey(0)), place.replicated)
        batches = jax.device_put(zero_samples(spec, prioritized, (2, 8)), place.batches)
        kept = learner_call(algo.update, place, prioritized)  # CPU devices: no donation by default
        assert not kept.donates
        kept(kept(state, batches).state, batches)
        assert not any(x.is_deleted() for x in jax.tree.leaves(state))
        call = learner_call(algo.update, place, prioritized, donate=True)  # as on an accelerator
        assert call.donates
        out = call(state, batches)
        again = out.state
        text = call.jitted.lower(again, batches).compile().as_text() if n == 1 else ""  # the jitted call itself
        call(again, batches)
        assert all(x.is_deleted() for x in jax.tree.leaves(again)), "the state was not donated"
        assert not any(x.is_deleted() for x in jax.tree.leaves(batches))
        if n == 1:
            assert "input_output_alias" in text
        print("donated", n, prioritized)
""")


def test_learner_call_donates_its_state() -> None:
    """On accelerators the compiled call aliases the state's buffers to its output: a device holds one copy of the
    learner state (on CPU devices it does not, by default: the copies that donation makes readers take cost more
    there than the memory). The batches are never donated (prioritized replay reads their indices after the call)."""
    proc = run([sys.executable, "-c", DONATION], env=fake_devices(2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("donated") == 4


PLACEMENT = textwrap.dedent("""
    import jax
    from jaxrl_dist.config import build
    from jaxrl_dist.roles.graph import build_graph

    cfg = build({"env": {"num_envs": 4}, "eval": {"interval": 0},
                 "roles": {"actor": {"devices": ["cpu:0", "cpu:1"], "count": 2},
                           "learner": {"devices": ["cpu:2", "cpu:3", "cpu:4", "cpu:5"]}}})
    g = build_graph(cfg)
    try:
        names = lambda ds: [f"{d.platform}:{d.id}" for d in ds]
        assert names(a.device for a in g.actors) == ["cpu:0", "cpu:0", "cpu:1", "cpu:1"]
        assert names(g.placement.devices) == ["cpu:2", "cpu:3", "cpu:4", "cpu:5"]
        for a in g.actors:
            assert a.refresh_params()
            assert {d for x in jax.tree.leaves(a.params) for d in x.devices()} == {a.device}
        # one copy per actor device per publish, shared by that device's threads
        assert g.actors[0].params is g.actors[1].params and g.actors[2].params is g.actors[3].params
        assert g.actors[0].params is not g.actors[2].params
        print("placed")
    finally:
        g.close()
""")


def test_actor_and_learner_devices_as_configured() -> None:
    proc = run([sys.executable, "-c", PLACEMENT], env=fake_devices(8))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "placed" in proc.stdout


def _fake_box(monkeypatch: pytest.MonkeyPatch, platform: str, count: int) -> list[SimpleNamespace]:
    import jaxrl_dist.distributed.devices as devices

    box = [SimpleNamespace(platform=platform, id=i) for i in range(count)]
    monkeypatch.setattr(devices.jax, "local_devices", lambda backend=None: box)
    return box


@pytest.mark.parametrize("algo, unit, learner", [("dqn", {"replay": {"batch_size": 256}}, 4),
                                                 ("dqn", {"replay": {"batch_size": 96}}, 6),
                                                 ("ppo", {"env": {"num_envs": 14}}, 7)])
def test_auto_splits_a_box_of_accelerators(monkeypatch: pytest.MonkeyPatch, algo: str, unit: dict,
                                           learner: int) -> None:
    """On 8 GPUs, `auto` puts the actors on the first and the learner mesh on as many of the other 7 as split the
    learner's batch evenly (256 -> 4, 96 -> 6; PPO splits its envs: 14 -> 7)."""
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed.devices import resolve

    box = _fake_box(monkeypatch, "gpu", 8)
    got = resolve(build({"algo": {"name": algo}, **unit}))
    assert got.actor == box[:1] and got.learner == box[1:1 + learner] and got.evaluator is box[0]
    assert "learner mesh on the" in got.note


def test_auto_keeps_every_role_on_the_first_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed.devices import resolve

    box = _fake_box(monkeypatch, "cpu", 8)
    got = resolve(build({}))
    assert got.actor == box[:1] and got.learner == box[:1] and got.note == ""
    counted = resolve(build({"roles": {"actor": {"devices": 2}, "learner": {"devices": 4}}}))
    assert counted.actor == box[:2] and counted.learner == box[2:6]  # a count: after the actors' devices


@pytest.mark.parametrize("config, sets", [
    ("ppo_cartpole.yaml", ("roles.actor.devices=[cpu:0,cpu:1]", "roles.learner.devices=[cpu:4,cpu:5,cpu:6,cpu:7]")),
])
def test_dqn_and_ppo_solve_on_8_devices(tmp_path: Path, config: str, sets: tuple[str, ...]) -> None:
    """PPO with actors on 2 and the learner on 4 of 8 fake devices solves CartPole. DQN's run on 8 fake devices is
    `tests/test_distributed.py::test_one_actor_device_and_four_learner_devices_solve_cartpole` (one CI run of a
    DQN solve on 8 fake devices: with 6 learner devices, `dqn_cartpole_8devices.yaml` takes 1-3 minutes on 2 cores;
    placements like its own are checked by `test_actor_and_learner_devices_as_configured`)."""
    proc = train(tmp_path, "eight", *sets, config=ROOT / "configs" / config, env=fake_devices(8), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "solved:" in proc.stdout, proc.stdout[-2000:]


def test_gpu_check_script_runs_as_shipped() -> None:
    """`scripts/gpu_check.sh --quick` (the GPU check's plumbing, on CartPole) ends with one JSON object of every
    figure the GPU run reports."""
    proc = run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--quick"], env=with_env(JAX_PLATFORMS="cpu"),
               timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("raw_envpool_sps", "actor_pipeline_ratio_accelerator", "actor_pipeline_ratio_cpu",
                "train_ppo_pong_sps", "train_ppo_pong_ups", "train_ddqn_pong_sps", "train_ddqn_pong_ups",
                "learner_updates_per_s_b256"):
        assert out[key] > 0, (key, out)
    assert set(out["sampler_calls_per_s"]) == {"1_threads", "2_threads"}
