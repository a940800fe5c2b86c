"""What `env.id` may name for the Python backends (issue 19): a `BaseEnv` subclass, a `gymnasium.Env` subclass, a
function returning an env, a registered gymnasium id; and the observation spaces they may have (Dict flattened).
Each form runs inline and in subprocess workers, with the same one-line errors."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from test_envs import check_semantics, run

from jaxrl_dist.envs import BaseEnv, Box, Discrete, make_env
from jaxrl_dist.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
HERE = "test_envs_sources"  # this module, as the workers import it (tests/ is on sys.path under pytest)
VECTORS = ["inline", "subprocess"]


class GymCountdown(gymnasium.Env):
    """A plain gymnasium env: terminates after `length` steps, reward 1 on the last; obs = [steps remaining]."""

    observation_space = gymnasium.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, length: int = 3) -> None:
        self.length, self.left = length, length

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.left = self.length
        return np.array([self.left], np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.left -= 1
        return np.array([self.left], np.float32), float(self.left == 0), self.left == 0, False, {}


class GymGoal(gymnasium.Env):
    """Dict observations whose keys are declared out of order; `position` counts steps."""

    observation_space = gymnasium.spaces.Dict({
        "position": gymnasium.spaces.Box(-10.0, 10.0, (2,), np.float64),
        "goal": gymnasium.spaces.Discrete(3),
        "aux": gymnasium.spaces.Dict({"flags": gymnasium.spaces.MultiBinary(2)}),
    })
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self) -> None:
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        return {"position": np.array([self.t, -self.t], np.float64), "goal": 2,
                "aux": {"flags": np.array([1, self.t % 2], np.int8)}}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict]:
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict]:
        self.t += 1
        return self._obs(), 0.0, self.t >= 4, False, {}


class GymTupleObs(GymCountdown):
    observation_space = gymnasium.spaces.Tuple((gymnasium.spaces.Discrete(2), gymnasium.spaces.Discrete(3)))


class GymTextInDict(GymCountdown):
    observation_space = gymnasium.spaces.Dict({"name": gymnasium.spaces.Text(5)})


class GymObsOnlyReset(GymCountdown):
    """The old gym API: reset returns the observation without info."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return super().reset(seed=seed)[0]


class WrongShapeReset(BaseEnv):
    observation_space = Box(0.0, 1.0, shape=(3,))
    action_space = Discrete(2)

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.zeros(2, np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        return np.zeros(3, np.float32), 0.0, False, False


class ScalarReset(WrongShapeReset):
    """A scalar would broadcast silently into the [3] row without the check."""

    def reset(self, seed: int | None = None) -> Any:
        return 0.5


class GymStyleStep(WrongShapeReset):
    """Returns gymnasium's 5-tuple from a BaseEnv step."""

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.zeros(3, np.float32)

    def step(self, action: Any) -> Any:
        return np.zeros(3, np.float32), 0.0, False, False, {}


class VectorReward(GymStyleStep):
    def step(self, action: Any) -> Any:
        return np.zeros(3, np.float32), np.zeros(2), False, False


class MultiEcho(BaseEnv):
    """A BaseEnv with gymnasium's MultiDiscrete actions; observes the action it was given, and refuses any other
    than an int [3] array."""

    observation_space = Box(0.0, 10.0, shape=(3,))
    action_space = gymnasium.spaces.MultiDiscrete([2, 3, 4])

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.zeros(3, np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        if not (isinstance(action, np.ndarray) and action.shape == (3,) and action.dtype.kind == "i"):
            raise TypeError(f"MultiEcho got {action!r}")
        return action.astype(np.float32), 0.0, False, False


class GymMultiEcho(GymCountdown):
    """The same as a gymnasium env: the adapter gives it the space's own dtype."""

    observation_space = gymnasium.spaces.Box(0.0, 10.0, (3,), np.float32)
    action_space = gymnasium.spaces.MultiDiscrete([2, 3, 4])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(3, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not (isinstance(action, np.ndarray) and action.shape == (3,) and action.dtype == np.int64):
            raise TypeError(f"GymMultiEcho got {action!r}")
        return action.astype(np.float32), 0.0, False, False, {}


def make_countdown(length: int = 3) -> gymnasium.Env:
    """A factory returning a gymnasium env."""
    return GymCountdown(length)


def make_base_countdown(length: int = 3) -> BaseEnv:
    """A factory returning a BaseEnv."""
    from jaxrl_dist.envs.fake import CountdownEnv

    return CountdownEnv(length)


def make_registered(max_steps: int = 7) -> gymnasium.Env:
    """A factory returning `gymnasium.make(...)`: its TimeLimit and spec come with it."""
    return gymnasium.make("CartPole-v1", max_episode_steps=max_steps)


def make_nothing() -> Any:
    return 42


NOT_AN_ENV = 3


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("name", ["GymCountdown", "make_countdown", "make_base_countdown"])
def test_gymnasium_class_and_factories_run_with_the_same_semantics(name: str, vector: str) -> None:
    env = make_env(f"{HERE}:{name}", num_envs=3, batch_size=2, kwargs={"length": 3}, vector=vector, workers=2)
    try:
        assert env.spec.action_kind == "discrete" and env.spec.num_actions == 2
        lengths = check_semantics(env, run(env, 24))
    finally:
        env.close()
    assert all(ls and set(ls) == {3} for ls in lengths.values())


@pytest.mark.parametrize("vector", VECTORS)
def test_factory_returning_gymnasium_make_keeps_its_time_limit(vector: str) -> None:
    env = make_env(f"{HERE}:make_registered", num_envs=2, kwargs={"max_steps": 5}, vector=vector)
    try:
        assert env.spec.max_episode_steps == 5 and env.spec.obs_shape == (4,)
        batches = run(env, 30)
    finally:
        env.close()
    check_semantics(env, batches, max_steps=5)


def test_registered_gymnasium_id_and_kwargs() -> None:
    env = make_env("gymnasium:CartPole-v1", num_envs=1, kwargs={"sutton_barto_reward": True})
    env.close()
    with pytest.raises(UserError, match=r"gymnasium env 'CartPole-v1': kwargs \['no_such'\] not accepted") as info:
        make_env("gymnasium:CartPole-v1", num_envs=1, kwargs={"no_such": 1})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("name", ["MultiEcho", "GymMultiEcho"])
def test_multi_discrete_actions_reach_the_envs_as_int_rows(name: str, vector: str) -> None:
    env = make_env(f"{HERE}:{name}", num_envs=3, batch_size=2, vector=vector, workers=2)
    try:
        assert env.spec.action_kind == "multi_discrete" and env.spec.nvec == (2, 3, 4)
        assert env.spec.action_shape == (3,)
        env.reset()
        sent: dict[int, np.ndarray] = {}
        for t in range(6):
            batch = env.recv(timeout=30)
            for i, obs, first in zip(batch.env_ids.tolist(), batch.obs, batch.first):
                np.testing.assert_array_equal(obs, 0 if first else sent[i])
            actions = np.array([[(t + i) % 2, (t + i) % 3, (t + i) % 4] for i in batch.env_ids], np.int32)
            env.send(actions, batch.env_ids)
            sent.update(zip(batch.env_ids.tolist(), actions.astype(np.float32)))
    finally:
        env.close()


@pytest.mark.parametrize("vector", VECTORS)
def test_dict_observations_are_flattened_in_sorted_key_order(vector: str) -> None:
    env = make_env(f"{HERE}:GymGoal", num_envs=2, vector=vector)
    try:
        # aux.flags (2), goal one-hot (3), position (2): keys sorted at every level.
        assert env.spec.obs_shape == (7,) and env.spec.obs_dtype == "float32"
        env.reset()
        first = env.recv(timeout=30)
        env.send(np.zeros(2, np.int64), first.env_ids)
        second = env.recv(timeout=30)
    finally:
        env.close()
    np.testing.assert_array_equal(first.obs[0], [1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(second.obs[0], [1, 1, 0, 0, 1, 1, -1])


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("NOT_AN_ENV", {}, "'NOT_AN_ENV' is not a BaseEnv subclass, a gymnasium.Env subclass or a function"),
        ("GymCountdown", {"lenght": 3}, r"kwargs \['lenght'\] do not fit 'GymCountdown'"),
        ("make_countdown", {"lenght": 3}, r"kwargs \['lenght'\] do not fit 'make_countdown'"),
        ("make_nothing", {}, "'make_nothing' returned int; expected a gymnasium.Env or a jaxrl_dist.envs.BaseEnv"),
        ("GymTupleObs", {}, (r"observation space Tuple\(Discrete\(2\), Discrete\(3\)\) is not supported; "
                             "allowed: Box, Discrete, or Dict")),
        ("GymTextInDict", {}, r"observation space Dict key 'name': Text\(.*\) is not supported; allowed in a Dict"),
    ],
)
@pytest.mark.parametrize("vector", VECTORS)
def test_refusals_at_build_are_one_line(name: str, kwargs: dict[str, Any], match: str, vector: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        make_env(f"{HERE}:{name}", num_envs=2, kwargs=kwargs, vector=vector).close()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name,match",
    [
        ("WrongShapeReset", r"reset\(\) returned an observation of shape \(2,\); expected \(3,\)"),
        ("ScalarReset", r"reset\(\) returned an observation of shape \(\); expected \(3,\)"),
        ("GymStyleStep", r"step\(\) returned a tuple of 5; expected \(obs, reward, terminated, truncated\)"),
        ("VectorReward", r"step\(\) returned a reward of shape \(2,\); expected a number"),
        ("GymObsOnlyReset", r"reset\(\) returned ndarray; expected \(obs, info\)"),
    ],
)
@pytest.mark.parametrize("vector", VECTORS)
def test_wrong_reset_and_step_results_are_one_line_errors(name: str, match: str, vector: str) -> None:
    env = make_env(f"{HERE}:{name}", num_envs=2, vector=vector)
    try:
        with pytest.raises(UserError, match=f"env '{HERE}:{name}': {match}") as info:
            run(env, 4)
    finally:
        env.close()
    assert "\n" not in str(info.value)
