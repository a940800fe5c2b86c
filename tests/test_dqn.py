"""DQN core: the TD loss against hand-computed targets, under jit; updates fit a known value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.algos.base import Transition
from jaxrl_dist.algos import BuildContext
from jaxrl_dist.algos.dqn import make, td_loss
from jaxrl_dist.config import build
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.networks import QHead, make_torso


def spec(obs_dim: int = 2, actions: int = 2) -> EnvSpec:
    return EnvSpec((obs_dim,), "float32", "discrete", actions, (), (), (), 0)


def batch(**over: np.ndarray) -> Transition:
    base = dict(obs=np.zeros((2, 2), np.float32), action=np.array([0, 1], np.int32),
                reward=np.array([1.0, 2.0], np.float32), discount=np.array([0.5, 0.0], np.float32),
                next_obs=np.zeros((2, 2), np.float32))
    base.update(over)
    return Transition(**base)


@pytest.mark.parametrize("double, expected_next", [(True, [3.0, 5.0]), (False, [4.0, 6.0])])
def test_td_loss_targets(double: bool, expected_next: list[float]) -> None:
    q = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    q_next_target = jnp.array([[3.0, 4.0], [5.0, 6.0]])
    q_next_online = jnp.array([[9.0, 0.0], [9.0, 0.0]])  # online net picks action 0 for Double DQN
    b = batch()
    loss, td = jax.jit(lambda *a: td_loss(*a, double=double, kind="mse"))(q, q_next_target, q_next_online, b)
    target = np.array([1.0, 2.0]) + np.array([0.5, 0.0]) * np.array(expected_next)
    np.testing.assert_allclose(td, target - np.array([1.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean(0.5 * (target - np.array([1.0, 2.0])) ** 2), rtol=1e-6)


def test_td_loss_rejects_wrong_rank() -> None:
    q = jnp.zeros((2, 2))
    with pytest.raises(AssertionError):
        td_loss(q, q, q, batch(reward=np.zeros((2, 1), np.float32)), double=True, kind="huber")


@pytest.mark.parametrize("dueling, target_update", [(False, "period"), (True, "polyak")])
def test_updates_fit_constant_value(dueling: bool, target_update: str) -> None:
    """Reward 1, discount 0.5, one state: Q converges to 1 / (1 - 0.5) = 2 for the taken action."""
    cfg = build({"algo": {"lr": 3e-3, "target_update": target_update, "target_period": 20, "tau": 0.05},
                 "network": {"hidden": [32], "dueling": dueling}})
    algo = make(spec(), cfg.algo, BuildContext(cfg.network))
    state = algo.init(jax.random.PRNGKey(0))
    obs = np.ones((32, 2), np.float32)
    b = Transition(obs, np.zeros(32, np.int32), np.ones(32, np.float32), np.full(32, 0.5, np.float32), obs)
    update = jax.jit(algo.update)
    for _ in range(1500):
        state, metrics = update(state, b)
    net = QHead(make_torso("mlp", (32,), "relu"), 2, dueling)
    q = net.apply(state.params, obs)
    assert abs(float(q[0, 0]) - 2.0) < 0.1
    assert int(state.steps) == 1500


def test_act_explores_and_eval_is_greedy() -> None:
    cfg = build({"network": {"hidden": [8]}})
    algo = make(spec(actions=3), cfg.algo, BuildContext(cfg.network))
    state = algo.init(jax.random.PRNGKey(1))
    obs = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    greedy = np.asarray(algo.eval_act(state.params, obs))
    a0, _ = algo.act(state.params, obs, jax.random.PRNGKey(2), 0.0)
    np.testing.assert_array_equal(a0, greedy)
    a1, key = algo.act(state.params, obs, jax.random.PRNGKey(2), 1.0)
    assert set(np.unique(np.asarray(a1))) == {0, 1, 2}
    assert algo.exploration(0) == cfg.algo.eps_start
    assert algo.exploration(10**9) == pytest.approx(cfg.algo.eps_end)
