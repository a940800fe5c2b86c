"""SAC: the tanh-Gaussian log-density, the uniform warm-up, Pendulum solved within the config's budget, exports with
float parity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from jaxrl_dist.algos import make_algorithm
from jaxrl_dist.algos.sac import squashed_sample
from jaxrl_dist.config import build, plan
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.export import FORMATS
from jaxrl_dist.export.signature import random_observations, signature_of
from jaxrl_dist.io import read_metrics
from jaxrl_dist.io.policy import load_policy

import cli_runs
from cli_runs import ROOT, command, run

CONFIG = ROOT / "configs" / "sac_pendulum.yaml"


def train(root: Path, name: str, *sets: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return cli_runs.train(root, name, *sets, config=CONFIG, extra=extra)


def test_squashed_sample_log_prob_is_the_change_of_variables() -> None:
    mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.2]])
    action, log_prob = squashed_sample(mean, log_std, jax.random.PRNGKey(0))
    pre = jnp.arctanh(action)
    naive = jnp.sum(norm.logpdf(pre, mean, jnp.exp(log_std)) - jnp.log(1.0 - action**2), axis=-1)
    np.testing.assert_allclose(log_prob, naive, rtol=1e-4)
    assert bool(jnp.all(jnp.abs(action) < 1.0))


SPEC = EnvSpec((3,), "float32", "continuous", 0, (2,), (-2.0, 0.0), (2.0, 1.0), 0)


def warmup_cfg(**algo: object) -> object:
    return build({"algo": {"name": "sac", **algo}, "network": {"hidden": [16]}, "env": {"num_envs": 4},
                  "replay": {"batch_size": 32}, "train": {"learning_starts": 500, "total_env_steps": 5000}})


def test_warmup_acts_uniformly_until_learning_starts_then_with_the_policy() -> None:
    """Before the run's learning_starts (the plan's `fill`, by default) `act` draws uniform actions in the bounds
    (mean and variance of U[low, high]); from then on, the policy's tanh-Gaussian samples."""
    cfg = warmup_cfg()
    run_plan = plan(cfg)
    assert run_plan.fill == 500
    algo = make_algorithm(SPEC, cfg, plan=run_plan)
    assert [algo.exploration(t) for t in (0, 499, 500, 10**6)] == [1.0, 1.0, 0.0, 0.0]
    params = algo.actor_params(algo.init(jax.random.PRNGKey(0)))
    n = 20_000
    obs = np.tile(np.random.default_rng(0).normal(size=(1, 3)).astype(np.float32), (n, 1))
    act = jax.jit(algo.act)
    low, high = np.array(SPEC.action_low), np.array(SPEC.action_high)
    warm = np.asarray(act(params, obs, jax.random.PRNGKey(1), algo.exploration(0))[0])
    assert warm.shape == (n, 2) and (warm >= low).all() and (warm <= high).all()
    np.testing.assert_allclose((warm.mean(axis=0) - low) / (high - low), [0.5, 0.5], atol=0.01)
    np.testing.assert_allclose(warm.var(axis=0), (high - low) ** 2 / 12, rtol=0.03)
    # After the warm-up: the distribution of the policy's own samples (drawn here with another key).
    after = np.asarray(act(params, obs, jax.random.PRNGKey(2), algo.exploration(500))[0])
    out = algo.inference(params, obs)
    unit, _ = squashed_sample(out["mean"], out["log_std"], jax.random.PRNGKey(3))
    policy = low + 0.5 * (np.asarray(unit) + 1.0) * (high - low)
    np.testing.assert_allclose((after.mean(axis=0) - policy.mean(axis=0)) / (high - low), [0, 0], atol=0.01)
    np.testing.assert_allclose(after.std(axis=0), policy.std(axis=0), rtol=0.05)
    assert (after.var(axis=0) < 0.5 * warm.var(axis=0)).all()  # the initial policy is far narrower than uniform


def test_warmup_steps_override_and_disable() -> None:
    explicit = make_algorithm(SPEC, warmup_cfg(warmup_steps=100), plan=plan(warmup_cfg(warmup_steps=100)))
    assert [explicit.exploration(t) for t in (99, 100)] == [1.0, 0.0]
    off = make_algorithm(SPEC, warmup_cfg(warmup_steps=0), plan=plan(warmup_cfg(warmup_steps=0)))
    assert off.exploration(0) == 0.0
    assert make_algorithm(SPEC, warmup_cfg()).exploration(0) == 0.0  # inference-only build (no plan): never acts


def test_sac_solves_pendulum_and_exports_with_float_parity(tmp_path: Path) -> None:
    """configs/sac_pendulum.yaml: eval mean >= -200 within 40k env steps; ONNX and SavedModel actions within 1e-5."""
    proc = train(tmp_path, "sac")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [r for r in read_metrics(tmp_path / "sac" / "metrics.jsonl") if "eval/episode_return" in r]
    assert max(r["eval/episode_return"] for r in evals) >= -200.0
    assert all(r["env_steps"] <= 40_000 + 64 for r in evals)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    export = run(command("export", "--experiment", str(tmp_path / "sac"), "--format", "all"))
    assert export.returncode == 0, export.stderr[-3000:]
    policy = load_policy(tmp_path / "sac")
    obs = random_observations(signature_of(policy), 1000, seed=3)
    want = jax.device_get(jax.jit(policy.algo.inference)(policy.params, obs))
    out = tmp_path / "sac" / "export" / str(policy.step)
    for fmt, path in (("onnx", out / "policy.onnx"), ("savedmodel", out / "savedmodel")):
        got = FORMATS[fmt].load(path)(obs)
        assert set(got) == {"action", "mean", "log_std"}
        for name in want:
            assert np.abs(got[name] - want[name]).max() <= 1e-5, (fmt, name)
        assert got["action"].shape == (1000, 1) and np.all(np.abs(got["action"]) <= 2.0)


def test_sac_on_a_discrete_env_is_refused(tmp_path: Path) -> None:
    proc = train(tmp_path, "bad", "env.id=CartPole-v1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "sac needs continuous actions" in proc.stderr and "allowed for it: dqn" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_sac_serial_mode_runs_and_resumes(tmp_path: Path) -> None:
    sets = ("roles.mode=serial", "train.total_env_steps=1500", "eval.interval=1000", "eval.target_return=null")
    first = train(tmp_path, "s", *sets)
    assert first.returncode == 0, first.stderr[-3000:]
    again = train(tmp_path, "s", *sets[:1], "train.total_env_steps=2000", *sets[2:])
    assert again.returncode == 2 and "--resume" in again.stderr  # an existing run is never overwritten by accident
    resumed = train(tmp_path, "s", *sets[:1], "train.total_env_steps=2000", *sets[2:], extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = read_metrics(tmp_path / "s" / "metrics.jsonl")
    assert records[-1]["env_steps"] >= 2000
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("train/") and v is not None)
