"""Prioritized replay: the sum tree, the sampling distribution (chi-square), importance weights, beta annealing,
priority feedback (stale items dropped), and a serial PER DQN run on CartPole whose priorities change."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats

from cli_runs import fake_devices, run
from jaxrl_dist.algos.base import PrioritizedBatch, Transition
from jaxrl_dist.records import PriorityFeedback
from jaxrl_dist.config import build
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.io import Checkpointer, read_metrics
from jaxrl_dist.replay.prioritized import PrioritizedReplay, linear_beta
from jaxrl_dist.replay.sumtree import SumTree
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.resume import read_counters, restore
from jaxrl_dist.roles.runner import run_graph


def test_sumtree_updates_and_search_match_cumsum() -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(37)  # not a power of two: padding leaves stay 0
    ref = np.zeros(37)
    for _ in range(50):
        slots = rng.integers(0, 37, size=rng.integers(1, 20))
        values = rng.uniform(0, 3, size=slots.size) * (rng.uniform(size=slots.size) > 0.2)
        slots, first = np.unique(slots, return_index=True)
        tree.update(slots, values[first])
        ref[slots] = values[first]
        assert tree.total == pytest.approx(ref.sum())
        np.testing.assert_allclose(tree.priorities(), ref)
    # Every internal node is the sum of its children.
    n = tree.nodes
    np.testing.assert_allclose(n[1:tree.leaves], n[2:2 * tree.leaves:2] + n[3:2 * tree.leaves:2])
    targets = rng.uniform(0, tree.total, size=2000)
    expected = np.searchsorted(np.cumsum(ref), targets, side="right")
    np.testing.assert_array_equal(tree.find(targets), expected)
    # Targets at or past the total (rounding) land on a slot with a positive priority.
    found = tree.find(np.array([tree.total, tree.total * (1 + 1e-12)]))
    assert (ref[found] > 0).all()
    tree.nodes[tree.leaves:] = 0
    tree.nodes[tree.leaves + 5] = 2.0
    tree.rebuild()
    assert tree.total == 2.0 and (tree.find(np.array([0.0, 1.9])) == 5).all()


def example() -> Transition:
    return Transition(np.zeros(3, np.float32), np.int32(0), np.float32(0), np.float32(0), np.zeros(3, np.float32))


def filled(partitions: int, items: int, capacity: int = 64, margin: int = 4, **kw: float) -> PrioritizedReplay:
    """A replay whose item with sequence number s of partition p has obs[0] = 1000 p + s."""
    args = dict(alpha=1.0, beta=linear_beta(0.5, 1.0, 100), eps=1e-6, block=True) | kw
    replay = PrioritizedReplay(example(), partitions, capacity, margin, **args)  # type: ignore[arg-type]
    for p, part in enumerate(replay.partitions):
        for start in range(0, items, margin):
            seqs = np.arange(start, min(items, start + margin))
            obs = np.stack([1000 * p + seqs, seqs, seqs], 1).astype(np.float32)
            part.add(Transition(obs, seqs.astype(np.int32), np.zeros(len(seqs), np.float32),
                                np.ones(len(seqs), np.float32), obs))
    return replay


def test_sampling_follows_priorities_chi_square() -> None:
    replay = filled(2, 40)
    rng = np.random.default_rng(1)
    first = replay.sample_stacked(1, 8, rng)  # syncs the trees: every item at the max priority (1.0)
    # Priorities p(i) = 1 + (i mod 5) on partition 0, 3 * that on partition 1 (alpha = 1, eps negligible).
    seqs = np.arange(40)
    for p in range(2):
        index = np.stack([np.full(40, p), seqs], 1)
        replay.feedback(PriorityFeedback(index, (1.0 + seqs % 5) * (1 + 2 * p)))
    draws = replay.sample_stacked(50, 400, rng)  # 20,000 draws
    key = draws.obs[..., 0].astype(int).ravel()
    assert replay.applied == 80 and replay.dropped == 0
    valid = [np.arange(replay.window[p][0], replay.window[p][1]) for p in range(2)]
    items = np.concatenate([1000 * p + v for p, v in enumerate(valid)])
    prio = np.concatenate([(1.0 + v % 5) * (1 + 2 * p) for p, v in enumerate(valid)])
    expected = prio / prio.sum() * key.size
    observed = np.array([(key == i).sum() for i in items])
    assert observed.sum() == key.size  # nothing outside the sampleable window
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, df=len(items) - 1) > 1e-3, chi2
    assert first.weight.shape == (1, 8) and first.index.shape == (1, 8, 2)


def test_importance_weights_and_beta_annealing() -> None:
    beta = linear_beta(0.4, 1.0, 1000)
    assert beta(0) == pytest.approx(0.4) and beta(500) == pytest.approx(0.7) and beta(5000) == 1.0
    replay = filled(1, 40, beta=beta)
    rng = np.random.default_rng(2)
    replay.sample_stacked(1, 4, rng)
    seqs = np.arange(40)
    replay.feedback(PriorityFeedback(np.stack([np.zeros(40, int), seqs], 1), 1.0 + seqs % 4))
    for steps in (0, 500, 2000):
        b = replay.sample_stacked(4, 32, rng, env_steps=steps)
        assert isinstance(b, PrioritizedBatch) and b.weight.dtype == np.float32
        s = b.obs[..., 0].astype(int)
        low, high = replay.window[0]
        p = np.where((s >= low) & (s < high), 1.0 + s % 4, np.nan)
        total = sum(1.0 + i % 4 for i in range(low, high))
        w = ((high - low) * p / total) ** -beta(steps)
        np.testing.assert_allclose(b.weight, w / w.max(axis=1, keepdims=True), rtol=1e-5)
        assert (b.weight.max(axis=1) == 1.0).all()
        np.testing.assert_array_equal(b.index[..., 1], s)  # the index names the sampled item


def test_new_items_get_max_priority_and_stale_feedback_is_dropped() -> None:
    replay = filled(1, 40, capacity=64, margin=4)
    rng = np.random.default_rng(3)
    replay.sample_stacked(1, 4, rng)
    replay.feedback(PriorityFeedback(np.array([[0, 3]]), np.array([9.0])))  # the largest priority so far
    replay.sample_stacked(1, 4, rng)
    top = 9.0 + 1e-6  # (|td| + eps) ** alpha with alpha = 1
    assert replay.max_priority == pytest.approx(top)
    tree, part = replay.trees[0], replay.partitions[0]
    assert tree.get(np.array([3]))[0] == pytest.approx(top)
    # 60 more items: sequence numbers 40..99; 3 leaves the window (and its slot is reused).
    for start in range(40, 100, 4):
        seqs = np.arange(start, start + 4)
        obs = np.stack([seqs, seqs, seqs], 1).astype(np.float32)
        part.add(Transition(obs, seqs.astype(np.int32), np.zeros(4, np.float32), np.ones(4, np.float32), obs))
    replay.feedback(PriorityFeedback(np.array([[0, 3], [0, 90]]), np.array([0.5, 0.25])))
    replay.sample_stacked(1, 4, rng)
    assert replay.dropped == 1  # seq 3 is gone: its feedback would describe another transition
    low, high = replay.window[0]
    assert (low, high) == (part._low(100), 100)
    live = np.arange(low, high)
    expected = np.where(live == 90, 0.25 + 1e-6, top)  # new items came in at the max priority
    np.testing.assert_allclose(tree.get(live % 64), expected)
    dead = np.setdiff1d(np.arange(64), live % 64)
    assert (tree.get(dead) == 0).all()  # slots a writer may reach soon are never drawn


def test_prioritized_needs_an_algorithm_with_priorities() -> None:
    cfg = build({"env": {"id": "Pendulum-v1", "num_envs": 2}, "algo": {"name": "sac"},
                 "replay": {"prioritized": True}, "roles": {"mode": "serial"}})
    with pytest.raises(ConfigError, match="replay.prioritized.*sac"):
        build_graph(cfg)


def test_per_dqn_cartpole_serial_trains_and_priorities_change(tmp_path: Path) -> None:
    cfg = build({
        "env": {"num_envs": 4}, "network": {"hidden": [32, 32]}, "roles": {"mode": "serial"},
        "algo": {"n_step": 3, "target_period": 50},
        "replay": {"capacity": 5000, "batch_size": 32, "prioritized": True, "alpha": 0.6},
        "train": {"total_env_steps": 2000, "learning_starts": 300, "replay_ratio": 0.25},
        "eval": {"interval": 0}, "checkpoint": {"interval": 0}, "log": {"tensorboard": False, "quiet": True},
    })
    g = build_graph(cfg)
    replay = g.path.replay
    assert isinstance(replay, PrioritizedReplay)
    run_graph(g, tmp_path, time.time())
    assert g.limiter.updates > 200 and replay.applied >= g.limiter.updates * 32 * 0.9
    live = replay.trees[0].get(np.arange(*replay.window[0]) % replay.partitions[0].capacity)
    assert (live > 0).all() and np.unique(live).size > 100  # learnt priorities, no longer all the max
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert rows and all(np.isfinite(r["train/loss"]) for r in rows)
    assert "priority" not in rows[-1]


def test_per_serial_runs_are_deterministic(tmp_path: Path) -> None:
    cfg = build({
        "env": {"num_envs": 2}, "network": {"hidden": [16]}, "roles": {"mode": "serial"},
        "replay": {"capacity": 2000, "batch_size": 16, "prioritized": True},
        "train": {"total_env_steps": 600, "learning_starts": 200}, "eval": {"interval": 0},
        "checkpoint": {"interval": 0}, "log": {"tensorboard": False, "quiet": True},
    })
    params = []
    for attempt in range(2):
        g = build_graph(cfg)
        (tmp_path / str(attempt)).mkdir()
        run_graph(g, tmp_path / str(attempt), time.time())
        params.append(jax.tree.leaves(jax.device_get(g.learner.state.params)))
    for a, b in zip(*params):
        np.testing.assert_array_equal(a, b)


# Fake devices must be configured before JAX starts, so the sharded check runs in its own process.
SHARDED = textwrap.dedent("""
    import jax, numpy as np
    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.algos.base import PrioritizedBatch
    from jaxrl_dist.config import build
    from jaxrl_dist.distributed import LearnerMesh
    from jaxrl_dist.envs import EnvSpec
    from jaxrl_dist.distributed.fused import fused_with_priorities
    from jaxrl_dist.replay.prioritized import rows_from_shards

    spec = EnvSpec((4,), "float32", "discrete", 2, (), (), (), 0)
    rng = np.random.default_rng(0)
    K, B = 3, 16
    batches = PrioritizedBatch(
        rng.normal(size=(K, B, 4)).astype(np.float32), rng.integers(0, 2, (K, B)).astype(np.int32),
        rng.normal(size=(K, B)).astype(np.float32), np.full((K, B), 0.99, np.float32),
        rng.normal(size=(K, B, 4)).astype(np.float32), rng.uniform(0.1, 1, (K, B)).astype(np.float32),
        np.zeros((K, B, 2), np.int32))
    cfg = build({"network": {"hidden": [16]}, "replay": {"prioritized": True}})
    out = {}
    for n in (1, 2):
        place = LearnerMesh.over(jax.devices()[:n])
        algo = make_algorithm(spec, cfg, place.grad_reduce)
        state = jax.device_put(algo.init(jax.random.PRNGKey(0)), place.replicated)
        out[n] = jax.device_get(fused_with_priorities(algo.update, place)(state, jax.device_put(batches, place.batches)))
    assert out[1].priority.shape == (K, B) and out[1].priority.std() > 0
    # The rows of a process's own shards, as a learner spanning processes hands them back (here: all of them).
    place = LearnerMesh.over(jax.devices()[:2])
    index = jax.device_put(np.arange(K * B * 2, dtype=np.int32).reshape(K, B, 2), place.batches)
    td = jax.device_put(np.arange(K * B, dtype=np.float32).reshape(K, B), place.replicated)
    rows, values = rows_from_shards(index, td)
    np.testing.assert_array_equal(rows[:, 0], 2 * values)  # each row keeps its own |td|
    np.testing.assert_array_equal(np.sort(values), np.arange(K * B))
    for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(out[2])):
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), rtol=1e-5, atol=1e-6)
    print("sharded ok")
""")


def test_priorities_from_a_sharded_learner_match_one_device() -> None:
    """On 2 devices each shard's |TD errors| are gathered in batch order: the same [K, B] as on one device, and the
    importance-weighted update is the same."""
    result = run([sys.executable, "-c", SHARDED], env=fake_devices(2))
    assert result.returncode == 0 and "sharded ok" in result.stdout, result.stderr[-3000:]


def test_priorities_saved_with_the_replay_are_restored(tmp_path: Path) -> None:
    cfg = build({
        "env": {"num_envs": 4}, "network": {"hidden": [16]}, "roles": {"mode": "serial"}, "eval": {"interval": 0},
        "replay": {"capacity": 3000, "batch_size": 16, "prioritized": True},
        "train": {"total_env_steps": 1200, "learning_starts": 400},
        "checkpoint": {"save_replay": True, "interval": 0}, "log": {"tensorboard": False, "quiet": True},
    })
    g = build_graph(cfg)
    run_graph(g, tmp_path, time.time())
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        g2 = build_graph(cfg, counters=read_counters(ckpt, save_replay=True))
        try:
            restore(g2, ckpt)
            a, b = g.path.replay, g2.path.replay
            assert isinstance(a, PrioritizedReplay) and isinstance(b, PrioritizedReplay)
            assert b.window == a.window and b.max_priority == a.max_priority
            live = np.arange(*a.window[0]) % a.partitions[0].capacity
            np.testing.assert_array_equal(b.trees[0].get(live), a.trees[0].get(live))
            assert np.unique(b.trees[0].get(live)).size > 10
        finally:
            g2.close()


def test_dqn_weighs_losses_and_returns_priorities() -> None:
    from jaxrl_dist.algos import BuildContext, Prioritized
    from jaxrl_dist.algos.dqn import make, td_loss
    from jaxrl_dist.envs import EnvSpec

    q = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    nxt = np.array([[3.0, 4.0], [5.0, 6.0]], np.float32)
    fields = (np.zeros((2, 2), np.float32), np.array([0, 1], np.int32), np.array([1.0, 2.0], np.float32),
              np.array([0.5, 0.0], np.float32), np.zeros((2, 2), np.float32))
    plain = Transition(*fields)
    weighted = PrioritizedBatch(*fields, np.array([1.0, 0.25], np.float32), np.zeros((2, 2), np.int32))
    loss, td = jax.jit(lambda b: td_loss(q, nxt, nxt, b, double=True, kind="mse"))(plain)
    wloss, wtd = jax.jit(lambda b: td_loss(q, nxt, nxt, b, double=True, kind="mse"))(weighted)
    np.testing.assert_allclose(wtd, td)
    np.testing.assert_allclose(wloss, np.mean(0.5 * np.square(np.asarray(td)) * [1.0, 0.25]), rtol=1e-6)
    cfg = build({"network": {"hidden": [8]}})
    algo = make(EnvSpec((2,), "float32", "discrete", 2, (), (), (), 0), cfg.algo, BuildContext(cfg.network))
    state = algo.init(jax.random.PRNGKey(0))
    _, out = jax.jit(algo.update)(state, weighted)
    assert out.priority.shape == (2,) and (np.asarray(out.priority) >= 0).all()
    assert not isinstance(jax.jit(algo.update)(state, plain)[1], Prioritized)  # no priorities for a plain batch
