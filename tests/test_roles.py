"""Role plumbing without threads: the replay-ratio limiter, parameter staleness, the Nature CNN torso."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxrl_dist.config import build
from jaxrl_dist.io import Checkpointer
from jaxrl_dist.networks import NatureCNN, QHead
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.resume import read_counters, restore
from jaxrl_dist.roles.runner import run_graph
from jaxrl_dist.roles.sync import ParamStore, RatioLimiter


def test_ratio_limiter_holds_both_directions() -> None:
    lim = RatioLimiter(ratio=0.5, start=100, slack=40)
    lim.add_env_steps(0, 100)
    assert not lim.learner_may_run(8)  # nothing past learning_starts yet
    lim.add_env_steps(0, 16)
    assert lim.learner_may_run(8) and not lim.learner_may_run(9)
    lim.add_env_steps(0, 24)  # 40 steps past start, 0 updates: exactly at the slack
    assert lim.actor_may_run()
    lim.add_env_steps(0, 1)
    assert not lim.actor_may_run()  # actors wait for the learner
    lim.add_updates(8)  # 8 updates account for 16 env steps
    assert lim.actor_may_run()
    lim.finished = True
    assert lim.actor_may_run()


def test_ratio_limiter_counts_from_resume_point() -> None:
    lim = RatioLimiter(ratio=0.25, start=5000 + 1000, slack=100, env_steps=5000, updates=1000)
    assert lim.allowed_updates() == 1000 and lim.actor_may_run()
    lim.add_env_steps(0, 1000 + 32)
    assert lim.allowed_updates() == 1008


def test_param_store_staleness_wait() -> None:
    store = ParamStore(version=0)
    store.publish({"cpu": {"w": 0}}, 0)
    assert not store.wait_newer(8, timeout=0.05)
    store.publish({"cpu": {"w": 1}}, 8)
    assert store.wait_newer(8, timeout=0.05) and store.latest("cpu") == ({"w": 1}, 8)


def test_actor_waits_when_parameters_are_too_stale(tmp_path: Path) -> None:
    cfg = build({"env": {"num_envs": 2}, "eval": {"interval": 0}, "train": {"max_staleness": 16}})
    g = build_graph(cfg)
    try:
        actor = g.actors[0]
        assert actor.refresh_params(timeout=0.05)
        g.limiter.add_updates(17)  # the learner moved on but published nothing newer
        start = time.monotonic()
        assert not actor.refresh_params(timeout=0.1)
        assert time.monotonic() - start >= 0.09
        g.store.publish({actor.device: g.store.latest(actor.device)[0]}, 17)
        assert actor.refresh_params(timeout=0.05) and actor.version == 17
    finally:
        g.close()


def test_nature_cnn_takes_raw_frames() -> None:
    net = QHead(NatureCNN((512,)), 6, dueling=True)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 4, 84, 84), dtype=np.uint8)
    params = net.init(jax.random.PRNGKey(0), frames)
    q = jax.jit(net.apply)(params, frames)
    assert q.shape == (3, 6) and np.isfinite(np.asarray(q)).all()


def test_replay_saved_in_checkpoint_is_restored(tmp_path: Path) -> None:
    cfg = build({
        "env": {"num_envs": 4}, "roles": {"mode": "serial"}, "eval": {"interval": 0},
        "replay": {"capacity": 5000}, "train": {"total_env_steps": 1500, "learning_starts": 500},
        "checkpoint": {"save_replay": True, "interval": 0}, "log": {"tensorboard": False, "quiet": True},
    })
    g = build_graph(cfg)
    run_graph(g, tmp_path, time.time())
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        counters = read_counters(ckpt, save_replay=True)
        g2 = build_graph(cfg, counters=counters)
        try:
            restore(g2, ckpt)
            a, b = g.path.replay.partitions[0], g2.path.replay.partitions[0]
            assert b.committed == a.committed >= 1500
            np.testing.assert_array_equal(a.data.obs, b.data.obs)
            # With the replay restored, learning resumes at once instead of refilling learning_starts.
            assert g2.limiter.start == counters.env_steps
            assert g2.store.version == counters.updates > 0
        finally:
            g2.close()
