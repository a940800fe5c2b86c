"""PPO and the on-policy segment path: GAE against a numpy reference, the update under jit, the staleness lag,
serial determinism, the sharded learner, resume, export, and learning CartPole within the config's budget."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from cli_runs import fake_devices, run, train
from jaxrl_dist.algos import Segment, make_algorithm
from jaxrl_dist.algos.ppo import gae
from jaxrl_dist.config import build
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.io import Checkpointer
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.resume import read_counters, restore
from jaxrl_dist.roles.runner import run_graph

CONFIG = "configs/ppo_cartpole.yaml"
ROOT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DISCRETE = EnvSpec((4,), "float32", "discrete", 2, (), (), (), 0)
CONTINUOUS = EnvSpec((3,), "float32", "continuous", 0, (2,), (-2.0, -1.0), (2.0, 1.0), 0)


def gae_reference(reward: np.ndarray, value: np.ndarray, term: np.ndarray, trunc: np.ndarray, gamma: float,
                  lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Loops over rows `[T + 1, B]`: advantages `[T, B]` and the valid mask (numpy, one env at a time)."""
    t_len, batch = reward.shape[0] - 1, reward.shape[1]
    adv, valid = np.zeros((t_len, batch)), np.ones((t_len, batch), bool)
    for b in range(batch):
        next_adv = 0.0
        for t in reversed(range(t_len)):
            if term[t, b] or trunc[t, b]:  # the env resets after row t: no transition to row t + 1
                valid[t, b], next_adv = False, 0.0
                continue
            if term[t + 1, b]:
                next_adv = reward[t + 1, b] - value[t, b]
            elif trunc[t + 1, b]:  # time limit: bootstrap from the final observation's value
                next_adv = reward[t + 1, b] + gamma * value[t + 1, b] - value[t, b]
            else:
                delta = reward[t + 1, b] + gamma * value[t + 1, b] - value[t, b]
                next_adv = delta + gamma * lam * next_adv
            adv[t, b] = next_adv
    return adv, valid


def test_gae_bootstraps_truncation_by_hand() -> None:
    """Rows 0..3 of one env; row 2 is truncated (its value c bootstraps), row 3 is the reset."""
    a, b, c, d, gamma, lam = 1.0, 2.0, 3.0, 4.0, 0.9, 0.5
    col = lambda *x: np.array(x, np.float32)[:, None]  # noqa: E731
    adv, ret, valid = gae(col(0, 1, 1, 0), col(a, b, c, d), col(0, 0, 0, 0) > 0, col(0, 0, 1, 0) > 0, gamma, lam)
    a1 = 1 + gamma * c - b
    a0 = (1 + gamma * b - a) + gamma * lam * a1
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [a0, a1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[:2, 0], [a0 + a, a1 + b], rtol=1e-6)
    assert np.asarray(valid)[:, 0].tolist() == [True, True, False]
    # Terminated instead: no bootstrap.
    adv, _, _ = gae(col(0, 1, 1, 0), col(a, b, c, d), col(0, 0, 1, 0) > 0, col(0, 0, 0, 0) > 0, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv)[1, 0], 1 - b, rtol=1e-6)


def test_gae_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    t_len, batch = 40, 6
    reward = rng.normal(size=(t_len + 1, batch)).astype(np.float32)
    value = rng.normal(size=(t_len + 1, batch)).astype(np.float32)
    end = rng.random((t_len + 1, batch)) < 0.15
    trunc = end & (rng.random((t_len + 1, batch)) < 0.5)
    term = end & ~trunc
    want, want_valid = gae_reference(reward, value, term, trunc, 0.97, 0.9)
    adv, ret, valid = jax.jit(gae, static_argnums=(4, 5))(reward, value, term, trunc, 0.97, 0.9)
    assert adv.shape == ret.shape == valid.shape == (t_len, batch)
    np.testing.assert_array_equal(np.asarray(valid), want_valid)
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), np.where(want_valid, want + value[:-1], 0), rtol=1e-5, atol=1e-5)


def random_segment(algo, state, spec: EnvSpec, num_envs: int, length: int, seed: int = 0,  # noqa: ANN001
                   obs_scale: float = 1.0, obs_shift: float = 0.0) -> Segment:
    """A segment `[num_envs, length + 1, ...]` of random observations (normal, `obs_shift + obs_scale * N(0, 1)`)
    with the policy's own records, acted with `algo.actor_params(state)`."""
    rng = np.random.default_rng(seed)
    obs = (obs_shift + obs_scale * rng.normal(size=(num_envs, length + 1, *spec.obs_shape))).astype(np.float32)
    params = algo.actor_params(state)
    record = jax.vmap(lambda o, k: algo.act(params, o, k, 0.0)[0], in_axes=(1, 0), out_axes=1)(
        obs, jax.random.split(jax.random.PRNGKey(seed), length + 1))
    end = rng.random((num_envs, length + 1)) < 0.1
    return Segment(obs, rng.normal(size=(num_envs, length + 1)).astype(np.float32), end & (rng.random(end.shape) < .5),
                   end & (rng.random(end.shape) >= .5), np.zeros_like(end), jax.device_get(record))


@pytest.mark.parametrize("spec,normalize_obs", [(DISCRETE, False), (CONTINUOUS, False), (DISCRETE, True)],
                         ids=["discrete", "continuous", "discrete-normalize_obs"])
def test_update_under_jit_gives_finite_scalar_metrics(spec: EnvSpec, normalize_obs: bool) -> None:
    cfg = build({"algo": {"name": "ppo", "segment_length": 8, "num_minibatches": 2, "epochs": 2},
                 "network": {"hidden": [16], "normalize_obs": normalize_obs}})
    algo = make_algorithm(spec, cfg)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    seg = random_segment(algo, state, spec, 4, 8)
    assert seg.policy.action.shape == (4, 9, *spec.action_shape) and seg.policy.value.shape == (4, 9)
    new, metrics = jax.jit(algo.update)(state, seg)
    assert {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"} <= set(metrics)
    for name, v in metrics.items():
        assert np.shape(v) == () and np.isfinite(v), name
    before, after = jax.tree.leaves(algo.actor_params(state)), jax.tree.leaves(algo.actor_params(new))
    assert any(not np.allclose(x, y) for x, y in zip(before, after))
    out = jax.jit(algo.inference)(algo.actor_params(new), seg.obs[:, 0])
    assert out["action"].shape == (4, *spec.action_shape) and out["value"].shape == (4,)
    if spec.action_kind == "continuous":
        assert (np.asarray(seg.policy.action) >= np.array(spec.action_low)).all()
        assert (np.asarray(seg.policy.action) <= np.array(spec.action_high)).all()


def noisy(params: Any, seed: int) -> Any:
    """`params` plus normal noise (std 0.5) on every leaf."""
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), len(jax.tree.leaves(params))))
    return jax.tree.map(lambda x: x + 0.5 * jax.random.normal(next(keys), x.shape), params)


def test_obs_norm_first_minibatch_is_on_policy_in_sync_mode() -> None:
    """Synchronous mode (max_staleness 0): the actor acted with the learner's current state, statistics included, so
    the first (and only) minibatch step sees ratio 1 exactly, although the segment moves the running statistics."""
    cfg = build({"algo": {"name": "ppo", "segment_length": 8, "num_minibatches": 1, "epochs": 1},
                 "network": {"hidden": [16], "normalize_obs": True}})
    for spec in (DISCRETE, CONTINUOUS):
        algo = make_algorithm(spec, cfg)
        state = algo.init(jax.random.PRNGKey(0))
        # A policy that depends on its input (the initial head is nearly uniform) and observations far from the
        # initial statistics (mean 0, variance 1): normalising with the updated statistics changes every logit.
        state = state.replace(inner=state.inner.replace(params=noisy(state.inner.params, seed=1)))
        seg = random_segment(algo, state, spec, 4, 8, obs_scale=3.0, obs_shift=4.0)
        _, metrics = jax.jit(algo.update)(state, seg)
        assert float(metrics["approx_kl"]) < 1e-8, (spec.action_kind, float(metrics["approx_kl"]))
        assert float(metrics["clip_frac"]) == 0.0, spec.action_kind


def test_segment_config_errors_name_the_key() -> None:
    from jaxrl_dist.config import plan

    base = {"algo": {"name": "ppo"}, "env": {"num_envs": 6}, "train": {"max_staleness": 1}}
    with pytest.raises(ConfigError, match="env.batch_size"):
        plan(build({**base, "env": {"num_envs": 6, "batch_size": 3}}))
    with pytest.raises(ConfigError, match="env.num_envs"):
        plan(build({**base, "roles": {"learner": {"devices": 4}}}))
    with pytest.raises(ConfigError, match="algo.num_minibatches"):
        plan(build({**base, "algo": {"name": "ppo", "segment_length": 10, "num_minibatches": 4}}))
    with pytest.raises(ConfigError, match="train.max_staleness.*allowed: 0 .* or 1"):  # 64, the replay default
        plan(build({**base, "train": {}}))
    assert plan(build(base)).updates_per_call == 1


def small_cfg(mode: str, staleness: int, steps: int = 640, **extra: dict) -> object:
    return build({"env": {"num_envs": 4}, "network": {"hidden": [16]},
                  "algo": {"name": "ppo", "segment_length": 8, "num_minibatches": 2, "epochs": 2},
                  "roles": {"mode": mode}, "train": {"total_env_steps": steps, "max_staleness": staleness},
                  "eval": {"interval": 0}, "log": {"tensorboard": False, "quiet": True},
                  "checkpoint": {"interval": 0}, **extra})


@pytest.mark.parametrize("mode,staleness", [("serial", 0), ("serial", 1), ("async", 1), ("async", 0)])
def test_segments_use_the_policy_version_staleness_asks_for(tmp_path: Path, mode: str, staleness: int) -> None:
    """Every row of segment s (after its bootstrap row 0) is acted with version max(0, s - max_staleness)."""
    g = build_graph(small_cfg(mode, staleness))
    actor, feed = g.actors[0], g.actors[0].writer
    assert feed is not None
    seen: list[tuple[int, int]] = []
    write = feed.write

    def spy(batch, record, timers) -> None:  # noqa: ANN001
        seen.append((feed.completed, actor.version))
        write(batch, record, timers)

    feed.write = spy  # type: ignore[method-assign]
    result = run_graph(g, tmp_path, time.time())
    assert result.updates >= 15
    assert seen and all(v == max(0, s - staleness) for s, v in seen), sorted(set(seen))


def test_continuous_env_trains_through_the_roles(tmp_path: Path) -> None:
    g = build_graph(small_cfg("async", 1, env={"id": "Pendulum-v1", "num_envs": 4}))
    result = run_graph(g, tmp_path, time.time())
    assert result.updates >= 15 and g.spec.action_kind == "continuous"
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(g.learner.state)))


def test_serial_mode_is_deterministic(tmp_path: Path) -> None:
    states = []
    for name in ("a", "b"):
        g = build_graph(small_cfg("serial", 1))
        (tmp_path / name).mkdir()
        run_graph(g, tmp_path / name, time.time())
        states.append(jax.device_get(g.learner.state))
    for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(x, y)


def test_resume_continues_counters(tmp_path: Path) -> None:
    g = build_graph(small_cfg("async", 1))
    first = run_graph(g, tmp_path, time.time())
    cfg = small_cfg("async", 1, steps=1280)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        counters = read_counters(ckpt, save_replay=False)
        assert (counters.env_steps, counters.updates) == (first.env_steps, first.updates)
        g2 = build_graph(cfg, counters=counters)
        restore(g2, ckpt)
        assert g2.store.version == first.updates and g2.limiter.segments == first.updates
        second = run_graph(g2, tmp_path, time.time(), ckpt)
    assert second.env_steps >= 1280 and second.updates > first.updates + 10


# Fake devices must be configured before JAX starts, so the check runs in its own process.
SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed import LearnerMesh, fused_update
    from jaxrl_dist.envs import EnvSpec
    sys_path = __import__("sys").path.insert(0, "tests")
    from test_ppo import DISCRETE, random_segment

    assert jax.device_count() == 2, jax.devices()
    for net in ({"hidden": [32]}, {"hidden": [32], "normalize_obs": True}):
        cfg = build({"algo": {"name": "ppo", "segment_length": 16, "num_minibatches": 4, "epochs": 3},
                     "network": net})
        out = []
        for n in (1, 2):
            place = LearnerMesh.over(jax.devices()[:n])
            algo = make_algorithm(DISCRETE, cfg, place.grad_reduce)
            state = algo.init(jax.random.PRNGKey(0))
            seg = random_segment(algo, state, DISCRETE, 8, 16)  # the same global segment on 1 and 2 devices
            seg = jax.tree.map(lambda x: x[None], seg)
            state = jax.device_put(state, place.replicated)
            state, metrics = fused_update(algo.update, place)(state, jax.device_put(seg, place.batches))
            out.append(jax.device_get((state, metrics)))
        for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
            np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), rtol=1e-4, atol=1e-5)
    print("ok")
""")


def test_update_is_the_same_on_1_and_2_devices() -> None:
    proc = run([sys.executable, "-c", SHARDED], env=fake_devices(2))
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_multidevice_config_trains_end_to_end(tmp_path: Path) -> None:
    """configs/ppo_cartpole_multidevice.yaml on 3 fake CPU devices: actor on cpu:0, the learner over cpu:1 and cpu:2."""
    proc = train(tmp_path, "sharded", "train.total_env_steps=3000", "eval.interval=1500", "eval.target_return=null",
                 config="configs/ppo_cartpole_multidevice.yaml", env=fake_devices(3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "sharded" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/episode_return" in r for r in rows) and rows[-1]["updates"] >= 10


def test_export_parity_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from jaxrl_dist.export import FORMATS, export_policy
    from jaxrl_dist.io.policy import LoadedPolicy

    cfg = build({"algo": {"name": "ppo"}, "network": {"hidden": [16, 16], "activation": "tanh"}})
    algo = make_algorithm(DISCRETE, cfg)
    params = algo.actor_params(jax.jit(algo.init)(jax.random.PRNGKey(3)))
    policy = LoadedPolicy(Path("/nonexistent/ppo"), 0, cfg, DISCRETE, algo, params, {})
    results = export_policy(policy, ["onnx"], tmp_path, samples=64, log=lambda _: None)
    obs = np.random.default_rng(1).normal(size=(256, 4)).astype(np.float32)
    want = jax.device_get(jax.jit(algo.inference)(params, obs))
    got = FORMATS["onnx"].load(results[0].path)(obs)
    assert set(got) == {"action", "logits", "value"}
    np.testing.assert_array_equal(got["action"], want["action"])
    for name in ("logits", "value"):
        assert np.abs(got[name] - want[name]).max() <= 1e-5


PONG = EnvSpec((4, 84, 84), "uint8", "discrete", 6, (), (), (), 0)
# CleanRL's ppo_atari_envpool Agent: Conv(4->32, 8/4), Conv(32->64, 4/2), Conv(64->64, 3/1), Dense(3136->512), then a
# linear policy head (512->6) and a linear value head (512->1) on that one trunk.
CLEANRL_ATARI_PARAMS = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (3136 * 512 + 512) \
    + (512 * 6 + 6) + (512 + 1)


def test_pong_config_has_cleanrls_shared_trunk() -> None:
    """configs/ppo_pong.yaml builds CleanRL's Atari agent: one Nature-CNN trunk, separate linear heads."""
    from jaxrl_dist.config import load_config

    cfg = load_config(ROOT_CONFIGS / "ppo_pong.yaml")
    assert cfg.algo.shared_trunk
    algo = make_algorithm(PONG, cfg)
    params = jax.eval_shape(algo.init, jax.random.PRNGKey(0)).params
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == CLEANRL_ATARI_PARAMS
    separate = make_algorithm(PONG, build({"algo": {"name": "ppo"}, "network": {"torso": "nature_cnn",
                                                                                  "hidden": [512]}}))
    separate_params = jax.eval_shape(separate.init, jax.random.PRNGKey(0)).params
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(separate_params)) > 1.9 * CLEANRL_ATARI_PARAMS


def test_shared_trunk_trains_with_one_torso() -> None:
    """An MLP shared trunk: one torso in the parameters, which both the policy and the value loss move."""
    cfg = build({"algo": {"name": "ppo", "segment_length": 8, "num_minibatches": 2, "epochs": 2, "shared_trunk": True},
                 "network": {"hidden": [16]}})
    algo = make_algorithm(DISCRETE, cfg)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    torsos = [k for k in state.params["params"] if "torso" in k]
    assert len(torsos) == 1, list(state.params["params"])
    new, metrics = jax.jit(algo.update)(state, random_segment(algo, state, DISCRETE, 4, 8))
    assert all(np.isfinite(v) for v in metrics.values())
    trunk = torsos[0]
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.params["params"][trunk], new.params["params"][trunk])
    assert all(jax.tree.leaves(moved))


def test_shared_trunk_cnn_export_parity(tmp_path: Path) -> None:
    """A shared-trunk Nature-CNN PPO policy takes raw uint8 frames in ONNX and SavedModel, matching JAX."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    from jaxrl_dist.export import FORMATS, export_policy
    from jaxrl_dist.export.signature import random_observations, signature_of
    from jaxrl_dist.io.policy import LoadedPolicy

    cfg = build({"algo": {"name": "ppo", "shared_trunk": True}, "network": {"torso": "nature_cnn", "hidden": [64]}})
    algo = make_algorithm(PONG, cfg)
    params = algo.actor_params(jax.jit(algo.init)(jax.random.PRNGKey(3)))
    policy = LoadedPolicy(Path("/nonexistent/ppo"), 0, cfg, PONG, algo, params, {})
    results = export_policy(policy, ["onnx", "savedmodel"], tmp_path, samples=64, log=lambda _: None)
    obs = random_observations(signature_of(policy), 256, seed=2)
    want = jax.device_get(jax.jit(algo.inference)(params, obs))
    for result in results:
        got = FORMATS[result.format].load(result.path)(obs)
        assert set(got) == {"action", "logits", "value"}
        np.testing.assert_array_equal(got["action"], want["action"])
        for name in ("logits", "value"):
            assert np.abs(got[name] - want[name]).max() <= 1e-5 * max(1.0, np.abs(want[name]).max()), result.format


def test_config_solves_cartpole(tmp_path: Path) -> None:
    """configs/ppo_cartpole.yaml reaches a 10-episode deterministic eval mean >= 475 within its env-step budget."""
    proc = train(tmp_path, "solve", config=CONFIG, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "solve" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval/episode_return"] for r in rows if "eval/episode_return" in r]
    assert max(evals) >= 475, evals
