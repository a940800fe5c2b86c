"""MultiDiscrete actions (issue 19): the spec and its JSON round trip, refused spaces, DQN's branching TD loss by
hand, PPO's product of categoricals, both learning a small MultiDiscrete bandit through the roles (custom backend,
replay and segment paths, the evaluator), and export parity."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import gymnasium.spaces as gs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.algos import make_algorithm
from jaxrl_dist.algos.base import Transition
from jaxrl_dist.algos.dqn import td_loss
from jaxrl_dist.config import build
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.envs.base import BaseEnv, Box
from jaxrl_dist.envs.spec import spec_from_spaces
from jaxrl_dist.errors import UserError
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.runner import run_graph

NVEC = (3, 2)
SPEC = EnvSpec((5,), "float32", "multi_discrete", 0, (2,), (), (), 0, nvec=NVEC)
PAD = -1e9  # what a padded entry of a shorter dimension holds (never the best, never sampled)


class Bandit(BaseEnv):
    """Each step shows a random target per action dimension (one-hot, concatenated: 3 + 2 entries); the reward is
    the fraction of dimensions whose action hits its target. Episodes of 4 steps: a perfect return is 4.

    The env checks what the vectorizer delivers: one action row `[2]` of whole numbers within `nvec`."""

    observation_space = Box(0.0, 1.0, shape=(5,))
    action_space: Any = gs.MultiDiscrete(list(NVEC))
    max_episode_steps = 4

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.target = np.zeros(2, np.int64)

    def _observe(self) -> np.ndarray:
        self.target = np.array([self.rng.integers(n) for n in NVEC])
        obs = np.zeros(5, np.float32)
        obs[self.target[0]] = obs[3 + self.target[1]] = 1.0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self._observe()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        a = np.asarray(action)
        assert a.shape == (2,) and np.all(a == np.round(a)) and np.all((0 <= a) & (a < np.array(NVEC))), a
        reward = float(np.mean(a.astype(np.int64) == self.target))
        return self._observe(), reward, False, False


def test_spec_of_a_multidiscrete_space_and_its_json_round_trip() -> None:
    spec = spec_from_spaces(Box(0.0, 1.0, shape=(5,)), gs.MultiDiscrete([3, 2]), 0, name="bandit")
    assert spec == SPEC and spec.action_shape == (2,) and spec.nvec == (3, 2)
    assert EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    old = {k: v for k, v in DISCRETE_SPEC.to_dict().items() if k != "nvec"}  # a checkpoint from before nvec
    assert EnvSpec.from_dict(old) == DISCRETE_SPEC


DISCRETE_SPEC = EnvSpec((4,), "float32", "discrete", 2, (), (), (), 0)


@pytest.mark.parametrize("space,name", [(gs.MultiBinary(3), "MultiBinary"),
                                        (gs.Tuple((gs.Discrete(2), gs.Discrete(3))), "Tuple"),
                                        (gs.MultiDiscrete([[2, 3], [4, 5]]), "MultiDiscrete"),
                                        (gs.MultiDiscrete([3, 2], start=[1, 0]), "MultiDiscrete")])
def test_other_action_spaces_are_refused_in_one_line(space: Any, name: str) -> None:
    with pytest.raises(UserError) as info:
        spec_from_spaces(Box(0.0, 1.0, shape=(5,)), space, 0, name="bad")
    message = str(info.value)
    assert "\n" not in message and name in message and "env 'bad'" in message, message


def test_sac_is_refused_and_names_the_algorithms_that_fit() -> None:
    with pytest.raises(UserError, match="has multi_discrete actions; allowed for it: dqn, ppo"):
        make_algorithm(SPEC, build({"algo": {"name": "sac"}}))


@pytest.mark.parametrize("double, next_values", [(True, [4.0, 6.0]), (False, [5.0, 7.0])])
def test_branching_td_loss_by_hand(double: bool, next_values: list[float]) -> None:
    """One target for every dimension: reward + discount * the mean over dimensions of each one's next value
    (action branching, Tavakoli et al. 2018); the loss averages the dimensions' losses."""
    q = jnp.array([[[1.0, 0.0, 0.0], [0.0, 2.0, PAD]]])  # [B=1, D=2, N=3]; dimension 1 has 2 actions
    q_next_target = jnp.array([[[3.0, 4.0, 5.0], [6.0, 7.0, PAD]]])
    q_next_online = jnp.array([[[0.0, 9.0, 0.0], [9.0, 0.0, PAD]]])  # Double DQN picks (1, 0)
    batch = Transition(np.zeros((1, 5), np.float32), np.array([[0, 1]], np.int32), np.array([1.0], np.float32),
                       np.array([0.5], np.float32), np.zeros((1, 5), np.float32))
    loss, td = jax.jit(lambda *a: td_loss(*a, double=double, kind="mse"))(q, q_next_target, q_next_online, batch)
    target = 1.0 + 0.5 * np.mean(next_values)
    want_td = target - np.array([1.0, 2.0])
    np.testing.assert_allclose(np.asarray(td), want_td[None], rtol=1e-6)
    np.testing.assert_allclose(float(loss), np.mean(0.5 * want_td**2), rtol=1e-6)


def perturbed_params(algo: Any, seed: int) -> Any:
    """Actor parameters with noise added, so that the policy depends on its input (the initial heads hardly do)."""
    params = algo.actor_params(algo.init(jax.random.PRNGKey(seed)))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), len(jax.tree.leaves(params))))
    return jax.tree.map(lambda x: x + 0.5 * jax.random.normal(next(keys), x.shape), params)


def test_ppo_samples_a_product_of_categoricals() -> None:
    """Each dimension is its own categorical over its `nvec[d]` logits: the recorded log-probability is the sum of
    the dimensions' log-probabilities, and each dimension's frequencies follow its softmax."""
    algo = make_algorithm(SPEC, build({"algo": {"name": "ppo"}, "network": {"hidden": [16]}}))
    params = perturbed_params(algo, 0)
    n = 20_000
    obs = np.tile(np.array([[1, 0, 0, 0, 1]], np.float32), (n, 1))
    record, _ = jax.jit(algo.act)(params, obs, jax.random.PRNGKey(2), 0.0)
    action = np.asarray(record.action)
    assert action.shape == (n, 2) and action.dtype == np.int32
    logits = np.asarray(algo.inference(params, obs[:1])["logits"][0], np.float64)
    assert logits.shape == (5,)
    parts = np.split(logits, [3])
    logp = [p - np.log(np.exp(p).sum()) for p in parts]
    want = logp[0][action[:, 0]] + logp[1][action[:, 1]]
    np.testing.assert_allclose(np.asarray(record.log_prob), want, rtol=1e-5, atol=1e-5)
    for d, size in enumerate(NVEC):
        freq = np.bincount(action[:, d], minlength=size) / n
        assert len(freq) == size  # no action beyond the dimension's own
        np.testing.assert_allclose(freq, np.exp(logp[d]), atol=0.015)


def test_dqn_explores_each_dimension_within_its_own_range() -> None:
    algo = make_algorithm(SPEC, build({"network": {"hidden": [16]}}))
    params = perturbed_params(algo, 3)
    obs = np.random.default_rng(0).random((4000, 5)).astype(np.float32)
    greedy = np.asarray(algo.eval_act(params, obs))
    out = algo.inference(params, obs)
    q = np.asarray(out["q_values"])
    assert q.shape == (4000, 5) and greedy.shape == (4000, 2) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy, np.stack([q[:, :3].argmax(-1), q[:, 3:].argmax(-1)], axis=1))
    act = jax.jit(algo.act)
    np.testing.assert_array_equal(np.asarray(act(params, obs, jax.random.PRNGKey(1), 0.0)[0]), greedy)
    explore = np.asarray(act(params, obs, jax.random.PRNGKey(1), 1.0)[0])
    for d, size in enumerate(NVEC):
        np.testing.assert_allclose(np.bincount(explore[:, d], minlength=size) / len(obs), 1 / size, atol=0.03)


def test_dqn_dueling_head_and_prioritized_update_on_replay_shaped_batches() -> None:
    """The replay's own batch shapes (`replay.items`, actions `[B, D]`): a dueling branching head centres each
    dimension's advantages; a prioritized update returns one priority per sample."""
    from jaxrl_dist.config import plan
    from jaxrl_dist.records import Prioritized
    from jaxrl_dist.replay.items import zero_samples

    cfg = build({"network": {"hidden": [16], "dueling": True}, "replay": {"prioritized": True, "batch_size": 8},
                 "env": {"num_envs": 2}})
    algo = make_algorithm(SPEC, cfg, plan=plan(cfg, SPEC))  # the plan traces the prioritized update too
    state = algo.init(jax.random.PRNGKey(0))
    batch = zero_samples(SPEC, True, (8,))
    assert batch.action.shape == (8, 2)
    rng = np.random.default_rng(0)
    batch = batch._replace(obs=rng.random((8, 5)).astype(np.float32), reward=np.ones(8, np.float32),
                           action=np.array([[2, 1]] * 8, batch.action.dtype), weight=np.ones(8, np.float32))
    _, out = jax.jit(algo.update)(state, batch)
    assert isinstance(out, Prioritized) and out.priority.shape == (8,) and np.isfinite(out.priority).all()
    # Each dimension's advantages are centred on their own mean: every dimension's mean value is the shared value.
    q = np.asarray(algo.inference(perturbed_params(algo, 1), batch.obs)["q_values"])
    means = [part.mean(axis=-1) for part in np.split(q, [3], axis=-1)]
    np.testing.assert_allclose(means[0], means[1], rtol=1e-5, atol=1e-5)


def bandit_cfg(algo: dict[str, Any], **sections: dict[str, Any]) -> Any:
    return build({"env": {"id": "test_algos_multidiscrete:Bandit", "num_envs": 8}, "network": {"hidden": [32]},
                  "algo": algo, "roles": {"mode": "serial"}, "eval": {"interval": 1000, "episodes": 10},
                  "log": {"tensorboard": False, "quiet": True}, "checkpoint": {"interval": 0}, **sections})


@pytest.mark.parametrize("algo,sections", [
    ({"name": "dqn", "lr": 3e-3, "gamma": 0.0, "eps_decay_steps": 1000, "target_period": 50},
     {"train": {"total_env_steps": 4000, "learning_starts": 200, "replay_ratio": 0.25},
      "replay": {"batch_size": 64, "capacity": 10_000}}),
    ({"name": "ppo", "lr": 3e-3, "gamma": 0.0, "segment_length": 16, "epochs": 4, "num_minibatches": 1,
      "ent_coef": 0.01}, {"train": {"total_env_steps": 8000, "max_staleness": 0}}),
], ids=["dqn", "ppo"])
def test_learns_a_multidiscrete_bandit_through_the_roles(tmp_path: Path, algo: dict, sections: dict) -> None:
    """Through the custom backend, the algorithm's data path and the evaluator: the greedy policy hits (nearly)
    every target (a perfect episode returns 4; a random policy about 1.7)."""
    g = build_graph(bandit_cfg(algo, **sections))
    assert g.spec == dataclasses.replace(SPEC, max_episode_steps=4)
    result = run_graph(g, tmp_path, time.time())
    assert result.best_eval is not None and result.best_eval >= 3.8, result
    params = g.algo.actor_params(jax.device_get(g.learner.state))
    targets = np.array([(a, b) for a in range(3) for b in range(2)])
    obs = np.zeros((6, 5), np.float32)
    obs[np.arange(6), targets[:, 0]] = obs[np.arange(6), 3 + targets[:, 1]] = 1.0
    np.testing.assert_array_equal(np.asarray(g.algo.eval_act(params, obs)), targets)


@pytest.mark.parametrize("name,outputs", [("dqn", {"action", "q_values"}), ("ppo", {"action", "logits", "value"})])
def test_export_parity(tmp_path: Path, name: str, outputs: set[str]) -> None:
    """Int32 actions `[batch, D]` and the per-dimension outputs concatenated along the last axis."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    from jaxrl_dist.export import FORMATS, export_policy
    from jaxrl_dist.export.signature import random_observations, signature_of
    from jaxrl_dist.io.policy import LoadedPolicy

    cfg = build({"algo": {"name": name}, "network": {"hidden": [16]}})
    algo = make_algorithm(SPEC, cfg)
    params = perturbed_params(algo, 4)
    policy = LoadedPolicy(Path(f"/nonexistent/{name}"), 0, cfg, SPEC, algo, params, {})
    results = export_policy(policy, ["onnx", "savedmodel"], tmp_path, samples=64, log=lambda _: None)
    obs = random_observations(signature_of(policy), 500, seed=1)
    want = jax.device_get(jax.jit(algo.inference)(params, obs))
    assert want["action"].shape == (500, 2) and want["action"].dtype == np.int32
    for result in results:
        got = FORMATS[result.format].load(result.path)(obs)
        assert set(got) == outputs, result.format
        np.testing.assert_array_equal(got["action"], want["action"])
        for key in outputs - {"action"}:
            assert got[key].shape == want[key].shape
            assert np.abs(got[key] - want[key]).max() <= 1e-5 * max(1.0, np.abs(want[key]).max()), (result, key)
