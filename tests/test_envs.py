"""Tests of jaxrl_dist.envs: EnvPool adapter, custom and gymnasium backends (inline and in subprocess workers, with
the same semantics checks), episode stats, specs, errors."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from jaxrl_dist.envs import BaseEnv, Box, Discrete, EnvSpec, EpisodeStats, StepBatch, VecEnv, make_env
from jaxrl_dist.envs.serial import SerialVecEnv
from jaxrl_dist.envs.vector import resolve_backend
from jaxrl_dist.errors import UserError

# gymnasium warns about float64 bounds of EnvPool's spaces; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FAKE = "jaxrl_dist.envs.fake"
HERE = "test_envs"  # this module, as subprocess workers import it (tests/ is on sys.path under pytest)
VECTORS = ["inline", "subprocess"]  # the Python envs' two backends, held to the same checks


def run(env: VecEnv, num_recvs: int, seed: int = 0) -> list[StepBatch]:
    """Resets `env`, then recv/send random valid actions `num_recvs` times; returns every batch."""
    rng = np.random.default_rng(seed)
    spec = env.spec
    env.reset()
    batches = []
    for _ in range(num_recvs):
        batch = env.recv(timeout=5.0)
        batches.append(batch)
        b = len(batch.env_ids)
        if spec.action_kind == "discrete":
            actions = rng.integers(spec.num_actions, size=b)
        else:
            low, high = np.array(spec.action_low), np.array(spec.action_high)
            actions = rng.uniform(low, high, (b, *spec.action_shape)).astype(np.float32)
        env.send(actions, batch.env_ids)
    return batches


def per_env_rows(batches: list[StepBatch]) -> dict[int, list[dict[str, Any]]]:
    """The batches regrouped as each env's sequence of rows (the straightforward per-env view)."""
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for batch in batches:
        for k, i in enumerate(batch.env_ids.tolist()):
            rows[i].append({f: getattr(batch, f)[k] for f in ("reward", "terminated", "truncated", "first", "score",
                                                               "game_over")})
    return rows


def check_semantics(env: VecEnv, batches: list[StepBatch], max_steps: int = 0) -> dict[int, list[int]]:
    """Asserts the StepBatch contract shared by all backends; returns each env's completed episode lengths."""
    spec = env.spec
    b = env.batch_size
    for batch in batches:
        assert batch.env_ids.dtype == np.int32 and batch.env_ids.shape == (b,)
        assert len(set(batch.env_ids.tolist())) == b
        assert batch.obs.shape == (b, *spec.obs_shape) and batch.obs.dtype == np.dtype(spec.obs_dtype)
        assert batch.reward.dtype == np.float32 and batch.score.dtype == np.float32 and batch.score.shape == (b,)
        for flags in (batch.terminated, batch.truncated, batch.first, batch.game_over):
            assert flags.dtype == np.bool_ and flags.shape == (b,)
        assert not np.any(batch.terminated & batch.truncated)
        assert not np.any(batch.game_over & ~(batch.terminated | batch.truncated))
    lengths: dict[int, list[int]] = {}
    for i, rows in per_env_rows(batches).items():
        assert rows[0]["first"], f"env {i} did not start with a first row"
        lengths[i] = []
        steps = 0
        for prev, row in zip(rows, rows[1:]):
            ended = prev["terminated"] or prev["truncated"]
            assert row["first"] == ended, f"env {i}: first must follow exactly the end of an episode"
            steps = 0 if row["first"] else steps + 1
            if row["first"]:
                assert row["reward"] == 0 and row["score"] == 0 and not row["terminated"] and not row["truncated"]
            if max_steps:
                assert steps <= max_steps
                assert row["truncated"] == (steps == max_steps and not row["terminated"])
            if row["terminated"] or row["truncated"]:
                lengths[i].append(steps)
    return lengths


# ---------------------------------------------------------------------------------------------------- envpool


def test_envpool_cartpole_async_batches_and_time_limit() -> None:
    env = make_env("CartPole-v1", num_envs=4, batch_size=2, num_threads=2, max_episode_steps=5)
    batches = run(env, 40)
    env.close()
    assert env.spec.max_episode_steps == 5 and env.spec.num_actions == 2
    first_two = np.concatenate([batches[0].env_ids, batches[1].env_ids])
    assert sorted(first_two.tolist()) == [0, 1, 2, 3]
    assert batches[0].first.all() and batches[1].first.all()
    lengths = check_semantics(env, batches, max_steps=5)
    assert any(5 in ls for ls in lengths.values())  # truncated at step 5, then first=True next


def test_envpool_sync_mode_returns_every_env() -> None:
    env = make_env("CartPole-v1", num_envs=3, num_threads=1, max_episode_steps=4)
    batches = run(env, 12)
    env.close()
    assert all(sorted(b.env_ids.tolist()) == [0, 1, 2] for b in batches)
    check_semantics(env, batches, max_steps=4)


@pytest.mark.parametrize("num_envs,batch_size", [(4, 2), (3, 3)])
def test_envpool_time_limit_applied_where_envpool_ignores_it(num_envs: int, batch_size: int) -> None:
    # Catch-v0 ignores max_episode_steps inside EnvPool (its episodes last 9 steps); the adapter enforces 3, also in
    # sync mode, where its own resets must not collide with the steps of the same round.
    env = make_env("Catch-v0", num_envs=num_envs, batch_size=batch_size, num_threads=1, max_episode_steps=3)
    batches = run(env, 30)
    env.close()
    lengths = check_semantics(env, batches, max_steps=3)
    assert all(ls and set(ls) == {3} for ls in lengths.values())


def push_left(env: VecEnv, num_recvs: int) -> list[StepBatch]:
    """Resets `env` and always pushes the cart left: each pole falls after a number of steps its seed fixes."""
    env.reset()
    batches = []
    for _ in range(num_recvs):
        batch = env.recv(timeout=5.0)
        batches.append(batch)
        env.send(np.zeros(len(batch.env_ids), np.int32), batch.env_ids)
    env.close()
    return batches


def first_episode_ends(batches: list[StepBatch]) -> dict[int, tuple[int, bool, bool]]:
    """Each env's first episode: (steps, terminated, truncated) of its last row."""
    ends = {}
    for i, rows in per_env_rows(batches).items():
        k = next(k for k, row in enumerate(rows) if k and row["first"]) - 1
        ends[i] = (k, bool(rows[k]["terminated"]), bool(rows[k]["truncated"]))
    return ends


@pytest.mark.parametrize("env_id,num_envs,batch_size,vector", [
    ("CartPole-v1", 3, 3, "inline"), ("CartPole-v1", 4, 2, "inline"), ("gymnasium:CartPole-v1", 3, 2, "inline"),
    ("gymnasium:CartPole-v1", 3, 2, "subprocess")])
def test_termination_on_the_time_limit_step_is_a_termination(env_id: str, num_envs: int, batch_size: int,
                                                             vector: str) -> None:
    """EnvPool sets done and trunc together when an episode terminates on the limit's step (so does gymnasium's
    TimeLimit): nothing follows a terminal state, so termination wins."""
    free = first_episode_ends(push_left(make_env(env_id, num_envs=num_envs, batch_size=batch_size, num_threads=1,
                                                 seed=5, vector=vector), 60))
    assert all(term and not trunc for _, term, trunc in free.values())
    limit = free[0][0]
    assert {k for k, _, _ in free.values()} != {limit}  # some envs run into the limit, some terminate before it
    env = make_env(env_id, num_envs=num_envs, batch_size=batch_size, num_threads=1, seed=5, max_episode_steps=limit,
                   vector=vector)
    batches = push_left(env, 60)
    check_semantics(env, batches, max_steps=limit)
    for i, (k, term, trunc) in first_episode_ends(batches).items():
        assert (k, term, trunc) == (min(free[i][0], limit), free[i][0] <= limit, free[i][0] > limit), f"env {i}"


def test_envpool_batches_are_not_reused_and_actions_are_copied() -> None:
    def trajectory(mutate: bool) -> tuple[list[StepBatch], list[np.ndarray]]:
        env = make_env("CartPole-v1", num_envs=64, num_threads=1, seed=3)
        env.reset()
        held, copies = [], []
        for t in range(30):
            batch = env.recv()
            held.append(batch)
            copies.append(batch.obs.copy())
            actions = np.full(64, t % 2, np.int32)  # already EnvPool's dtype: no implicit copy
            env.send(actions, batch.env_ids)
            if mutate:  # EnvPool reads actions after send returns; the adapter must have sent its own copy.
                actions[:] = 1 - t % 2
        env.close()
        return held, copies

    held, copies = trajectory(mutate=False)
    assert all(np.array_equal(b.obs, c) for b, c in zip(held, copies))
    mutated, _ = trajectory(mutate=True)
    assert all(np.array_equal(a.obs, b.obs) for a, b in zip(held, mutated))


def test_mujoco_float32_actions_reach_envpool_as_float64() -> None:
    env = make_env("HalfCheetah-v4", num_envs=2, num_threads=1)
    assert env.spec.action_kind == "continuous" and env.spec.action_shape == (6,)
    assert env.spec.action_low == (-1.0,) * 6 and env.spec.action_high == (1.0,) * 6
    assert env.spec.obs_shape == (17,) and env.spec.obs_dtype == "float32"
    batches = run(env, 4)
    env.close()
    check_semantics(env, batches)
    assert np.all(batches[-1].reward != 0)


def test_atari_pong_obs_uint8() -> None:
    env = make_env("Pong-v5", num_envs=2, num_threads=1)
    assert env.spec.obs_shape == (4, 84, 84) and env.spec.obs_dtype == "uint8" and env.spec.num_actions == 6
    batches = run(env, 3)
    env.close()
    assert batches[-1].obs.shape == (2, 4, 84, 84) and batches[-1].obs.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------- episode stats


def test_episode_stats_match_per_env_reference_across_async_batches() -> None:
    env = make_env("CartPole-v1", num_envs=6, batch_size=4, num_threads=2, max_episode_steps=12)
    batches = run(env, 150)
    env.close()
    stats = EpisodeStats(6)
    got_returns, got_lengths = [], []
    for batch in batches:
        returns, lengths = stats.update(batch)
        assert returns.dtype == np.float32 and lengths.dtype == np.int32
        got_returns += returns.tolist()
        got_lengths += lengths.tolist()
    # Reference: walk each env's rows in order; the two must agree as multisets (batch order interleaves envs).
    ref_returns, ref_lengths = [], []
    for rows in per_env_rows(batches).values():
        ret, length = 0.0, 0
        for row in rows:
            if row["first"]:
                ret, length = 0.0, 0
                continue
            ret, length = ret + float(row["reward"]), length + 1
            if row["terminated"] or row["truncated"]:
                ref_returns.append(ret)
                ref_lengths.append(length)
    assert len(got_lengths) > 20
    assert sorted(got_lengths) == sorted(ref_lengths)
    assert sorted(got_returns) == pytest.approx(sorted(ref_returns))
    assert got_returns == pytest.approx(got_lengths)  # CartPole: reward 1 per step


@pytest.mark.parametrize("env_id,vector", [
    ("CartPole-v1", "inline"), (f"{FAKE}:CountdownEnv", "inline"), ("gymnasium:CartPole-v1", "inline"),
    (f"{FAKE}:CountdownEnv", "subprocess"), ("gymnasium:CartPole-v1", "subprocess")])
def test_backends_without_lives_report_every_episode_as_a_game(env_id: str, vector: str) -> None:
    env = make_env(env_id, num_envs=3, batch_size=2, num_threads=1, max_episode_steps=8, vector=vector)
    batches = run(env, 40)
    env.close()
    check_semantics(env, batches, max_steps=8)
    for batch in batches:
        np.testing.assert_array_equal(batch.score, batch.reward)
        np.testing.assert_array_equal(batch.game_over, batch.terminated | batch.truncated)


def rows_batch(ids: list[int], reward: list[float], score: list[float], term: list[bool], trunc: list[bool],
               first: list[bool], over: list[bool]) -> StepBatch:
    n = len(ids)
    return StepBatch(np.array(ids, np.int32), np.zeros((n, 1), np.float32), np.array(reward, np.float32),
                     np.array(term), np.array(trunc), np.array(first), np.array(score, np.float32), np.array(over))


def test_episode_stats_sum_a_game_over_its_lives_in_real_score() -> None:
    """Env 0 loses a life (terminated, not game over), goes on in a new life (`first`), then its game ends; env 1
    is truncated by the time limit meanwhile. Rewards are clipped, scores are the game's own."""
    stats = EpisodeStats(2)
    stream = [
        rows_batch([0, 1], [0, 0], [0, 0], [False, False], [False, False], [True, True], [False, False]),
        rows_batch([1, 0], [1, 1], [7, 30], [False, False], [False, False], [False, False], [False, False]),
        rows_batch([0], [0], [0], [True], [False], [False], [False]),  # a lost life
        rows_batch([0, 1], [0, 1], [0, 4], [False, False], [False, True], [True, False], [False, True]),
        rows_batch([0, 1], [1, 0], [10, 0], [True, False], [False, False], [False, True], [True, False]),
        rows_batch([1, 0], [-1, 0], [-2, 0], [False, False], [False, False], [False, True], [False, False]),
    ]
    ended = [stats.update(b) for b in stream]
    assert [(r.tolist(), n.tolist()) for r, n in ended] == [
        ([], []), ([], []), ([], []), ([11.0], [2]), ([40.0], [3]), ([], [])]
    assert ended[3][0].dtype == np.float32 and ended[3][1].dtype == np.int32


# ---------------------------------------------------------------------------------------------------- custom backend


class EndsBoth(BaseEnv):
    """Reports terminated and truncated together on its 3rd step."""

    observation_space = Box(0.0, 1.0, shape=(1,))
    action_space = Discrete(2)

    def __init__(self) -> None:
        self.t = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.t = 0
        return np.zeros(1, np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t >= 3, self.t >= 3


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("max_steps", [0, 3])
def test_custom_env_termination_wins_over_truncation(max_steps: int, vector: str) -> None:
    env = make_env(f"{HERE}:EndsBoth", num_envs=2, max_episode_steps=max_steps, vector=vector)
    batches = run(env, 9)
    env.close()
    assert all(set(ls) == {3} for ls in check_semantics(env, batches).values())
    assert sum(b.terminated.sum() for b in batches) == 4 and not any(b.truncated.any() for b in batches)


@pytest.mark.parametrize("vector", VECTORS)
def test_countdown_terminates_with_reward_on_last_step(vector: str) -> None:
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=3, batch_size=2, kwargs={"length": 3}, vector=vector)
    assert resolve_backend(f"{FAKE}:CountdownEnv") == "custom"
    batches = run(env, 30)
    env.close()
    lengths = check_semantics(env, batches)
    assert all(ls and set(ls) == {3} for ls in lengths.values())
    for rows in per_env_rows(batches).values():
        for row in rows:
            assert row["reward"] == float(row["terminated"]) and not row["truncated"]
    stats = EpisodeStats(3)
    ended = [stats.update(b) for b in batches]
    assert {float(r) for rs, _ in ended for r in rs} == {1.0}
    # obs is one-hot over steps remaining: 3 right after reset, 0 in the terminal observation.
    for batch in batches:
        remaining = batch.obs.argmax(axis=1)
        assert np.all(remaining[batch.first] == 3) and np.all(remaining[batch.terminated] == 0)


@pytest.mark.parametrize("vector", VECTORS)
def test_constant_reward_truncates_at_horizon_and_override(vector: str) -> None:
    env = make_env(f"{FAKE}:ConstantRewardEnv", num_envs=2, kwargs={"horizon": 4, "obs_dim": 3}, vector=vector)
    assert env.spec.max_episode_steps == 4 and env.spec.obs_shape == (3,)
    batches = run(env, 12)
    env.close()
    lengths = check_semantics(env, batches, max_steps=4)
    assert all(set(ls) == {4} for ls in lengths.values())
    assert not any(b.terminated.any() for b in batches)
    short = make_env(f"{FAKE}:ConstantRewardEnv", num_envs=2, max_episode_steps=2, kwargs={"horizon": 4},
                     vector=vector)
    assert set(check_semantics(short, run(short, 9), max_steps=2)[0]) == {2}
    short.close()


@pytest.mark.parametrize("vector", VECTORS)
def test_continuous_target_reward_and_bounds(vector: str) -> None:
    env = make_env(f"{FAKE}:ContinuousTargetEnv", num_envs=2, kwargs={"target": 0.5, "length": 3}, vector=vector)
    assert env.spec.action_kind == "continuous" and env.spec.action_shape == (1,)
    assert env.spec.action_low == (-2.0,) and env.spec.action_high == (2.0,)
    env.reset()
    batch = env.recv()
    env.send(np.array([[0.5], [1.5]], np.float32), batch.env_ids)
    batch = env.recv()
    assert batch.reward[batch.env_ids == 0][0] == 0.0 and batch.reward[batch.env_ids == 1][0] == pytest.approx(-1.0)
    lengths = check_semantics(env, run(env, 12))
    env.close()
    assert all(set(ls) == {3} for ls in lengths.values())


@pytest.mark.parametrize("vector", VECTORS)
def test_custom_async_batches_are_round_robin_and_deterministic(vector: str) -> None:
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=4, batch_size=2, vector=vector)
    env.reset()
    assert env.recv().env_ids.tolist() == [0, 1]
    assert env.recv().env_ids.tolist() == [2, 3]
    env.send(np.zeros(2, np.int64), np.array([3, 2], np.int32))
    env.send(np.zeros(2, np.int64), np.array([0, 1], np.int32))
    assert env.recv().env_ids.tolist() == [3, 2]  # least recently sent first
    with pytest.raises(ValueError, match="sent again"):
        env.send(np.zeros(1, np.int64), np.array([0], np.int32))
    assert env.recv().env_ids.tolist() == [0, 1]
    with pytest.raises(ValueError, match="name an env twice"):
        env.send(np.zeros(2, np.int64), np.array([2, 2], np.int32))
    with pytest.raises(TimeoutError, match="batch_size=2"):  # nothing was sent by the refused call
        env.recv(timeout=0.01)
    other = make_env(f"{FAKE}:CountdownEnv", num_envs=4, batch_size=2, vector=vector)
    one, two = run(env, 20), run(other, 20)
    env.close()
    other.close()
    assert all(np.array_equal(a.obs, b.obs) and np.array_equal(a.env_ids, b.env_ids) for a, b in zip(one, two))


def test_subprocess_batches_equal_inline_batches() -> None:
    """The same seeds and actions give the same batches, field for field, whether the envs are stepped inline or by
    workers (here two workers over five envs, async batches of two, a time limit, random actions)."""
    args: dict[str, Any] = {"num_envs": 5, "batch_size": 2, "seed": 3, "max_episode_steps": 7}
    inline = make_env("gymnasium:CartPole-v1", **args)
    workers = make_env("gymnasium:CartPole-v1", **args, vector="subprocess", workers=2)
    one, two = run(inline, 60, seed=1), run(workers, 60, seed=1)
    inline.close()
    workers.close()
    assert inline.spec == workers.spec
    check_semantics(workers, two, max_steps=7)
    assert sum(int(b.truncated.sum() + b.terminated.sum()) for b in one) > 5
    for a, b in zip(one, two):
        for field, x, y in zip(StepBatch._fields, a, b):
            assert x.dtype == y.dtype and np.array_equal(x, y), field


class SeedRecorder(BaseEnv):
    """Records the seed of every reset; episodes last 2 steps."""

    observation_space = Box(0.0, 1.0, shape=(1,))
    action_space = Discrete(2)

    def __init__(self) -> None:
        self.seeds: list[int | None] = []
        self.t = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.seeds.append(seed)
        self.t = 0
        return np.zeros(1, np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self.t += 1
        return np.zeros(1, np.float32), 0.0, self.t >= 2, False


def test_custom_seeds_first_reset_only() -> None:
    recorders = [SeedRecorder() for _ in range(3)]
    run(SerialVecEnv(recorders, batch_size=3, seed=10), 7)  # three episodes each: reset, step, step (terminal)
    assert [e.seeds for e in recorders] == [[10 + i, None, None] for i in range(3)]


@pytest.mark.parametrize("vector", VECTORS)
def test_env_i_is_seeded_with_seed_plus_i_once(vector: str) -> None:
    env = make_env(f"{FAKE}:SeedEchoEnv", num_envs=3, batch_size=3, seed=10, vector=vector, workers=2)
    batches = run(env, 7)  # three episodes each: reset, step, step (terminal)
    env.close()
    seeds = {i: [float(obs[0]) for b in batches for j, obs, first in zip(b.env_ids, b.obs, b.first) if j == i and first]
             for i in range(3)}
    assert seeds == {i: [10.0 + i, -1.0, -1.0] for i in range(3)}


# ---------------------------------------------------------------------------------------------------- gymnasium backend


@pytest.mark.parametrize("vector", VECTORS)
def test_gymnasium_cartpole_matches_envpool_semantics(vector: str) -> None:
    env = make_env("gymnasium:CartPole-v1", num_envs=3, batch_size=2, max_episode_steps=6, vector=vector)
    assert resolve_backend("gymnasium:CartPole-v1") == "gymnasium"
    pool = make_env("CartPole-v1", num_envs=3, batch_size=2, num_threads=1, max_episode_steps=6)
    assert env.spec == pool.spec
    pool.close()
    lengths = check_semantics(env, run(env, 40), max_steps=6)
    env.close()
    assert any(6 in ls for ls in lengths.values())
    default = make_env("gymnasium:CartPole-v1", num_envs=1, vector=vector)
    default.close()
    assert default.spec.max_episode_steps == 500  # gymnasium's TimeLimit


def test_auto_falls_back_to_gymnasium_for_ids_envpool_lacks() -> None:
    assert resolve_backend("Taxi-v4") == "gymnasium"
    env = make_env("Taxi-v4", num_envs=2)
    assert env.spec.obs_shape == () and env.spec.obs_dtype == "int32" and env.spec.num_actions == 6
    check_semantics(env, run(env, 5))


# ---------------------------------------------------------------------------------------------------- spec and errors


def test_env_spec_round_trips_through_json() -> None:
    specs = [
        make_env("HalfCheetah-v4", num_envs=1, num_threads=1).spec,
        make_env(f"{FAKE}:CountdownEnv", num_envs=1).spec,
    ]
    specs.append(EnvSpec((2,), "float32", "continuous", 0, (2,), (-np.inf, 0.0), (np.inf, 1.0), 0))
    for spec in specs:
        assert EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        assert EnvSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "env_id,kwargs,match",
    [
        ("CartPol-v1", {}, "unknown env id 'CartPol-v1'.*CartPole-v1"),
        ("no_such_module_xyz:Env", {}, "module 'no_such_module_xyz' not found"),
        (f"{FAKE}:NoSuchEnv", {}, "has no attribute 'NoSuchEnv'"),
        (f"{FAKE}:np", {}, "'np' is not a BaseEnv subclass, a gymnasium.Env subclass or a function returning an env"),
        ("jaxrl_dist.envs.base:BaseEnv", {}, "does not implement"),
        (f"{FAKE}:CountdownEnv", {"lenght": 3}, "kwargs \\['lenght'\\] do not fit"),
        ("a:b:c", {}, "expected 'package.module:Name'"),
        ("CartPole-v1", {"no_such_option": 1}, "not accepted"),
    ],
)
def test_user_errors_are_one_line(env_id: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        make_env(env_id, num_envs=1, kwargs=kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"batch_size": 3}, "batch_size=3"),
        ({"num_envs": 0}, "num_envs=0"),
        ({"backend": "ray"}, "env backend 'ray'.*auto, envpool, custom, gymnasium"),
        ({"backend": "envpool", "env_id": "Taxi-v4"}, "not an envpool task"),
        ({"max_episode_steps": -1}, "max_episode_steps=-1"),
        ({"vector": "threads"}, "env vector 'threads' is not allowed; allowed: inline, subprocess"),
        ({"vector": "subprocess"}, "env vector 'subprocess' is not allowed for envpool task 'CartPole-v1'"),
        ({"vector": "subprocess", "workers": -1, "env_id": f"{FAKE}:CountdownEnv"}, "workers=-1"),
    ],
)
def test_bad_sizes_and_backends(overrides: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"env_id": "CartPole-v1", "num_envs": 2, **overrides}
    with pytest.raises(UserError, match=match):
        make_env(args.pop("env_id"), **args)


def test_box_and_discrete_spaces() -> None:
    box = Box(-1.0, [1.0, 2.0])
    assert box.shape == (2,) and box.low.tolist() == [-1.0, -1.0] and box.dtype == np.float32
    sample = box.sample(np.random.default_rng(0))
    assert np.all(sample >= box.low) and np.all(sample <= box.high)
    assert 0 <= Discrete(3).sample(np.random.default_rng(0)) < 3
    with pytest.raises(ValueError, match="exceeds"):
        Box(1.0, 0.0, shape=(1,))
