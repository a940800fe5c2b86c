"""Smoke runs of the shipped Atari, MuJoCo and multi-device configs as a user starts them
(`python -m jaxrl_dist.train`), shrunk by `--set` to a few hundred env steps: exit 0, finite metrics, a final
checkpoint. The multi-device configs run on 3 fake CPU devices (actor on one, the learner on two), the 8-device one on
8."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cli_runs import ROOT, fake_devices, train
from jaxrl_dist.io import read_metrics

SMOKE = {
    # Double DQN + 3-step + PER + frames stored once, Nature CNN: tiny replay, a handful of updates (a CNN update
    # takes about a second on a small CPU).
    "ddqn_pong": ("env.num_envs=4", "env.batch_size=0", "replay.capacity=2000", "replay.batch_size=8",
                  "roles.learner.updates_per_call=2", "train.total_env_steps=400", "train.learning_starts=200",
                  "train.replay_ratio=0.05", "eval.interval=0"),
    "sac_halfcheetah": ("env.num_envs=2", "replay.capacity=2000", "replay.batch_size=32", "network.hidden=[32,32]",
                        "train.total_env_steps=400", "train.learning_starts=200", "train.replay_ratio=0.1",
                        "roles.learner.updates_per_call=2", "eval.interval=200", "eval.episodes=1",
                        "env.max_episode_steps=100"),
    # PPO with two Nature CNNs: two 16-step segments of 2 envs, one minibatch epoch each.
    "ppo_pong": ("env.num_envs=2", "algo.segment_length=16", "algo.epochs=1", "algo.num_minibatches=1",
                 "train.total_env_steps=64", "eval.interval=0"),
    "dqn_cartpole_multidevice": ("train.total_env_steps=3000", "eval.interval=0"),
    "sac_pendulum_multidevice": ("train.total_env_steps=2000", "eval.interval=0"),
    "dqn_cartpole_8devices": ("train.total_env_steps=3000", "eval.interval=0"),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_shipped_config_smoke_run(tmp_path: Path, name: str) -> None:
    env = fake_devices(3) if name.endswith("_multidevice") else fake_devices(8) if name.endswith("8devices") else None
    result = train(tmp_path, name, *SMOKE[name], config=ROOT / "configs" / f"{name}.yaml", timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    exp = tmp_path / name
    records = read_metrics(exp / "metrics.jsonl")
    budget = next(int(s.split("=")[1]) for s in SMOKE[name] if s.startswith("train.total_env_steps="))
    assert records[-1]["env_steps"] >= budget and records[-1]["updates"] > 0
    trained = [r for r in records if any(k.startswith("train/") and k != "train/epsilon" for k in r)]
    assert trained, "no learner metrics"
    for r in trained:  # non-finite values are written as null
        for key, value in r.items():
            if key.startswith("train/"):
                assert value is not None and math.isfinite(value), (key, r)
    assert any((exp / "checkpoints").iterdir()), "no checkpoint written"
    if name == "sac_halfcheetah":
        evals = [r for r in records if "eval/episode_return" in r]
        assert evals and all(math.isfinite(r["eval/episode_return"]) for r in evals)
