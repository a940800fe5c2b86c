"""Atari lives, clipped rewards and time limits on real EnvPool games (issue 16).

With `episodic_life=True` a lost life ends a learning episode (terminated) and EnvPool's next row for that env is a
new-life reset row, which must read `first`; the game goes on, so statistics and evaluation count whole games, in the
game's real score even when `reward_clip=True` clips what the learner gets. A termination on the time limit's own
step is a termination. References come from EnvPool's own gymnasium API, stepped in lock-step with the same seeds
and actions. Breakout and Space Invaders have lives (Pong has none); a random Breakout game lasts about 200 steps.
"""

from __future__ import annotations

import itertools
from typing import Any

import envpool
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_atari import Pair
from test_envs import check_semantics, run

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.envs import EpisodeStats, StepBatch, VecEnv, make_env
from jaxrl_dist.roles.evaluator import Evaluator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ATARI = {"episodic_life": True, "reward_clip": True}  # CleanRL's settings


def lockstep(task: str, actions: np.ndarray, seed: int, kwargs: dict[str, Any]) -> tuple[list[StepBatch], dict]:
    """Steps the adapter (sync mode, rows ordered by env id) and EnvPool's gymnasium API on the same seeds with the
    same actions `[T, N]`, checking that both see the same observations.

    Returns:
        The adapter's T + 1 batches, and EnvPool's rows as arrays `[T + 1, N]`: "score" (info reward), "over"
        (info terminated: game over), "end" (terminated or truncated), "trunc", "lives".
    """
    n = actions.shape[1]
    env = make_env(task, num_envs=n, num_threads=1, seed=seed, kwargs=kwargs)
    raw = envpool.make(task, env_type="gymnasium", num_envs=n, num_threads=1, seed=seed, **kwargs)
    batches: list[StepBatch] = []
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("score", "over", "end", "trunc", "lives")}
    try:
        env.reset()
        obs, info = raw.reset()
        term = trunc = np.zeros(n, bool)
        for t in range(len(actions) + 1):
            b = env.recv()
            order = np.argsort(b.env_ids)
            b = type(b)(*(x[order] for x in b))
            np.testing.assert_array_equal(b.obs, obs)  # the same trajectories
            batches.append(b)
            for key, value in (("score", info["reward"]), ("over", info["terminated"] != 0), ("end", term | trunc),
                               ("trunc", trunc), ("lives", info["lives"])):
                rows[key].append(np.asarray(value))
            if t < len(actions):
                env.send(actions[t], b.env_ids)
                obs, _, term, trunc, info = raw.step(actions[t])
    finally:
        env.close()
        raw.close()
    return batches, {k: np.stack(v) for k, v in rows.items()}


def reference_games(rows: dict) -> list[tuple[float, int]]:
    """Whole games in EnvPool's rows: (sum of the real reward, env steps), steps across lives, reset rows (a row
    after an ended one) not counted. A game ends at game over or at the time limit."""
    games = []
    for i in range(rows["score"].shape[1]):
        score, steps = 0.0, 0
        for k in range(1, len(rows["score"])):
            if rows["end"][k - 1, i]:
                continue  # EnvPool's autoreset row (new game or new life): no step happened
            score, steps = score + float(rows["score"][k, i]), steps + 1
            if rows["over"][k, i] or rows["trunc"][k, i]:
                games.append((score, steps))
                score, steps = 0.0, 0
    return games


def test_life_loss_ends_an_episode_and_the_next_row_starts_one() -> None:
    """Async batches of Breakout with episodic lives: the StepBatch contract holds across life losses."""
    env = make_env("Breakout-v5", num_envs=3, batch_size=2, num_threads=1, seed=1, kwargs=ATARI)
    batches = run(env, 400)
    env.close()
    check_semantics(env, batches)  # `first` follows exactly every terminated / truncated row, game_over implies one
    lives_lost = games = 0
    for batch in batches:
        lives_lost += int(np.sum(batch.terminated & ~batch.game_over))
        games += int(np.sum(batch.game_over))
    assert lives_lost >= 6 and games >= 2
    # EnvPool continues the frame stack into a new life (one new frame), and restarts it for a new game.
    obs: dict[int, list[Any]] = {i: [] for i in range(3)}
    for batch in batches:
        for k, i in enumerate(batch.env_ids.tolist()):
            obs[i].append((batch.obs[k], batch.terminated[k], batch.game_over[k], batch.first[k]))
    for rows in obs.values():
        for (prev, term, over, _), (cur, _, _, first) in itertools.pairwise(rows):
            if term and not over:
                assert first and np.array_equal(cur[:-1], prev[1:])
            if over:
                assert first and all(np.array_equal(f, cur[0]) for f in cur)


def test_stats_report_whole_games_in_real_score() -> None:
    """Space Invaders (3 lives, aliens worth 5 to 30 points) with clipped rewards, random actions."""
    actions = np.random.default_rng(0).integers(0, 6, (1200, 2)).astype(np.int32)
    batches, rows = lockstep("SpaceInvaders-v5", actions, seed=2, kwargs=ATARI)
    expected = reference_games(rows)
    stats = EpisodeStats(2)
    got = []
    for batch in batches:
        assert set(np.unique(batch.reward).tolist()) <= {-1.0, 0.0, 1.0}  # the learner still gets clipped rewards
        returns, lengths = stats.update(batch)
        got += list(zip(returns.tolist(), lengths.tolist()))
    assert len(expected) >= 3 and max(score for score, _ in expected) > 100
    assert np.sum(rows["lives"][:-1] > rows["lives"][1:]) > len(expected)  # lives were lost within games
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("episodic_life", [True, False])
def test_life_lost_on_the_time_limit_step(episodic_life: bool) -> None:
    """EnvPool reports done and trunc when the limit's step loses a life. With episodic lives that life loss is a
    termination (terminal wins over truncated), and the game ends there; without, it is only the time limit."""

    def noop_rows(max_steps: int, episodic: bool) -> list[dict[str, Any]]:
        env = make_env("Breakout-v5", num_envs=1, num_threads=1, seed=4, max_episode_steps=max_steps,
                       kwargs={"episodic_life": episodic, "reward_clip": True})
        env.reset()
        rows = []
        for _ in range(80):
            b = env.recv()
            rows.append({f: getattr(b, f)[0] for f in b._fields})
            env.send(np.zeros(1, np.int32), b.env_ids)
        env.close()
        return rows

    # Always NOOP: the first life is lost after a fixed number of steps; up to then both settings play the same.
    free = noop_rows(0, episodic=True)
    limit = next(k for k, row in enumerate(free) if row["terminated"])  # rows[0] is the reset row: k steps
    assert limit < 60
    rows = noop_rows(limit, episodic_life)
    end = rows[limit]
    if episodic_life:
        assert end["terminated"] and not end["truncated"]
    else:
        assert end["truncated"] and not end["terminated"]
    assert end["game_over"]
    new = rows[limit + 1]
    assert new["first"] and all(np.array_equal(f, new["obs"][0]) for f in new["obs"])  # a new game
    assert any(row["terminated"] or row["truncated"] for row in rows[limit + 1 :])  # the limit applies again


def test_evaluator_plays_whole_games_in_real_score() -> None:
    """Greedy evaluation ends an episode at game over, not at a lost life, and reports the real score."""
    fire = 1

    def eval_act(params: Any, obs: jax.Array) -> jax.Array:
        return jnp.full(obs.shape[0], fire, jnp.int32)

    algo = Algorithm(None, None, None, eval_act, lambda state: state, lambda steps: 0.0, None)  # type: ignore[arg-type]

    def make(render: bool) -> VecEnv:
        return make_env("SpaceInvaders-v5", num_envs=2, num_threads=1, seed=7, kwargs=ATARI)

    probe = make(False)
    probe.close()
    evaluator = Evaluator(make, probe.spec, algo, jax.devices("cpu")[0])
    out = evaluator.run(jnp.zeros(()))
    assert out is not None
    stats, _ = out
    _, rows = lockstep("SpaceInvaders-v5", np.full((1000, 2), fire, np.int32), seed=7, kwargs=ATARI)
    first_games = []
    for i in range(2):  # each env's first game, in EnvPool's reference
        ends = np.flatnonzero(rows["over"][:, i] | rows["trunc"][:, i])
        assert ends.size, "no game over within 1000 steps"
        sub = {k: v[: ends[0] + 1, i : i + 1] for k, v in rows.items()}
        first_games += reference_games(sub)
    assert all(score > 50 for score, _ in first_games)
    scores = np.array([s for s, _ in first_games])
    lengths = np.array([n for _, n in first_games], np.float64)
    assert stats["eval/episode_return"] == pytest.approx(scores.mean())
    assert stats["eval/episode_return_min"] == pytest.approx(scores.min())
    assert stats["eval/episode_length"] == pytest.approx(lengths.mean())
    assert stats["eval/episode_length_max"] == pytest.approx(lengths.max())


def test_frames_and_transitions_across_life_losses() -> None:
    """The actor's write path on Breakout with episodic lives: one transition per env step (no transition from a
    terminal frame stack into a new life's), and frames stored once still give back every stored stack."""
    env = make_env("Breakout-v5", num_envs=2, num_threads=1, seed=5, kwargs=ATARI)
    rng = np.random.default_rng(1)
    pair = Pair(num_envs=2, stack=4, hw=(84, 84), capacity=4000, n=1, batch=2)
    steps, ended = 0, np.ones(2, bool)  # an env steps in every row that does not follow the end of its episode
    episodes = 0
    try:
        env.reset()
        for _ in range(600):
            b = env.recv()
            order = np.argsort(b.env_ids)
            ids = b.env_ids[order]
            term, trunc = b.terminated[order], b.truncated[order]
            steps += int(np.sum(~ended[ids]))
            ended[ids] = term | trunc
            episodes += int(np.sum(term | trunc))
            actions = rng.integers(0, env.spec.num_actions, 2).astype(np.int32)
            full = np.zeros(2, np.int32)
            full[ids] = actions
            pair.write(ids, b.obs[order], full, b.reward[order], term, trunc, b.first[order])
            env.send(actions, ids)
    finally:
        env.close()
    assert episodes >= 10  # mostly lost lives: a random Breakout game has five
    assert pair.plain.partitions[0].committed == steps
    assert pair.assert_same() == steps
