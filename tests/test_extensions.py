"""Users' own algorithm, network torso, env and env wrappers, from outside the package (examples/extending/), and the
config-switched transforms (observation normalisation, reward scaling)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dist.algos import Algorithm, Transition
from jaxrl_dist.algos.transforms import ObsStats, merge_moments, normalize, with_reward_scale
from jaxrl_dist.envs import make_env
from jaxrl_dist.io import read_metrics
from jaxrl_dist.io.policy import load_checkpoint, load_policy

from cli_runs import ROOT, command, run, train, with_env

EXAMPLES = ROOT / "examples" / "extending"
FAKE = "jaxrl_dist.envs.fake"


def best_eval(exp: Path) -> float:
    return max(r["eval/episode_return"] for r in read_metrics(exp / "metrics.jsonl") if "eval/episode_return" in r)


def test_custom_algorithm_and_torso_solve_cartpole(tmp_path: Path) -> None:
    """examples/extending/cartpole.yaml: clipped double Q + a LayerNorm torso reach >= 475 in the 150k budget."""
    proc = train(tmp_path, "cdq", config=EXAMPLES / "cartpole.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert best_eval(tmp_path / "cdq") >= 475.0


@pytest.mark.parametrize("mode", ["serial", "async"])
def test_custom_env_and_algorithm_learn_chain(tmp_path: Path, mode: str) -> None:
    """examples/extending/chain.yaml: walking past the 0.1 distractor to the reward of 1 (optimal) in 20k steps."""
    proc = train(tmp_path, mode, f"roles.mode={mode}", config=EXAMPLES / "chain.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert best_eval(tmp_path / mode) >= 1.0


def test_extension_with_transforms_resumes_and_exports(tmp_path: Path) -> None:
    """A user's algorithm + env with frame stacking, observation normalisation and reward scaling: its checkpoint
    holds the statistics, it resumes, and its ONNX export (statistics inside the graph) matches JAX."""
    sets = ("roles.mode=serial", "env.wrappers=[{frame_stack: 2}]", "network.normalize_obs=true",
            "train.reward_scale=0.5", "train.total_env_steps=2000", "eval.target_return=null", "eval.interval=1000")
    first = train(tmp_path, "x", *sets, config=EXAMPLES / "chain.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    tree, meta = load_checkpoint(tmp_path / "x" / "checkpoints")
    stats = tree["learner"].obs_stats
    assert stats.mean.shape == (2, 9) and float(stats.count) > 300  # [frames, cells], fed by every update
    mean = np.asarray(stats.mean)  # of one-hot cells: each frame's mean sums to 1
    np.testing.assert_allclose(mean.sum(-1), 1.0, rtol=1e-4)
    assert mean.min() >= 0 and 0.1 < mean[:, 1].min() < 0.9
    resumed = train(tmp_path, "x", *sets[:-2], "train.total_env_steps=3000", "eval.target_return=null",
                    "eval.interval=1000", config=EXAMPLES / "chain.yaml", extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_policy(tmp_path / "x").step >= 3000
    pytest.importorskip("onnxruntime")
    export = run(command("export", "--experiment", str(tmp_path / "x")))
    assert export.returncode == 0, export.stderr[-3000:]
    assert "actions identical" in export.stdout  # the export's own parity check on 1,000 observations


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["algo.name=broken_syntax:ALGO"], "importing module 'broken_syntax' failed: SyntaxError"),
        (["algo.name=user_algos:not_a_def"], "is a function, not a jaxrl_dist.algos.AlgorithmDef"),
        (["algo.name=user_algos:NO_GAMMA"], "lacks the field(s) gamma"),
        (["algo.name=user_algos:BAD_SIGNATURE"], "cannot be called as make(spec, config, context)"),
        (["algo.name=user_algos:RETURNS_DICT"], "make returned a dict, not a jaxrl_dist.algos.Algorithm"),
        (["algo.name=user_algos:MISSING"], "module 'user_algos' has no attribute 'MISSING'"),
        (["network.torso=user_algos:not_a_def"], "is not a flax.linen.Module subclass"),
        (["network.torso=jaxrl_dist.networks:MLP", "network.kwargs={width: 3}"], "do not fit its fields"),
        (["env.wrappers=[{user_algos:not_a_def: {}}]"], "is not a subclass of jaxrl_dist.envs.VecEnvWrapper"),
    ],
)
def test_registration_errors_are_one_line(tmp_path: Path, sets: list[str], message: str) -> None:
    """A module that does not import, a wrong object, a missing field or a wrong signature: one line naming the
    object and what it lacks, exit code 2, and no experiment directory."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _write_module(plugins, "broken_syntax", "ALGO = (\n")
    _write_module(plugins, "user_algos", """
        import dataclasses
        from jaxrl_dist.algos import AlgorithmDef
        from jaxrl_dist.algos.dqn import make as dqn_make

        def not_a_def():
            pass

        @dataclasses.dataclass(frozen=True)
        class NoGamma:
            name: str = "x"
            n_step: int = 1

        @dataclasses.dataclass(frozen=True)
        class Full:
            name: str = "x"
            gamma: float = 0.99
            n_step: int = 1

        NO_GAMMA = AlgorithmDef(config=NoGamma, make=dqn_make)
        BAD_SIGNATURE = AlgorithmDef(config=Full, make=lambda spec: None)
        RETURNS_DICT = AlgorithmDef(config=Full, make=lambda spec, cfg, reduce: {})
    """)
    config = tmp_path / "minimal.yaml"
    config.write_text("env:\n  id: CartPole-v1\n")
    proc = train(tmp_path, "bad", *sets, config=config, env=with_env(PYTHONPATH=str(plugins)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_frame_stack_follows_async_batches_and_episode_starts() -> None:
    """Env ids arrive in any order and batches of 2 out of 3; a stack restarts with each episode."""
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=3, batch_size=2, kwargs={"length": 3},
                   wrappers=[{"frame_stack": 3}])
    raw = make_env(f"{FAKE}:CountdownEnv", num_envs=3, batch_size=2, kwargs={"length": 3})
    assert env.spec.obs_shape == (3, 4) and raw.spec.obs_shape == (4,)
    history: dict[int, list[np.ndarray]] = {}
    env.reset()
    for _ in range(12):
        batch = env.recv(timeout=5)
        for row, i in enumerate(batch.env_ids):
            inner = batch.obs[row][-1]
            history[i] = [inner] * 3 if batch.first[row] else [*history[i][1:], inner]
            np.testing.assert_array_equal(batch.obs[row], np.stack(history[i]))
        env.send(np.zeros(len(batch.env_ids), np.int32), batch.env_ids)
    env.close()
    raw.close()


def test_obs_norm_moments_match_numpy() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (64, 5)).astype(np.float32) for _ in range(10)]
    stats = ObsStats(jnp.zeros(5), jnp.ones(5), jnp.float32(1e-8))
    for b in batches:
        stats = merge_moments(stats, jnp.asarray(b), lambda x: x)
    data = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)
    z = np.asarray(normalize(stats, jnp.asarray(data)))
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-2 and np.abs(z).max() <= 5.0


def test_reward_scale_reaches_update_only() -> None:
    seen = []

    def update(state, batch):  # noqa: ANN001, ANN202
        seen.append(np.asarray(batch.reward))
        return state, {}

    algo = Algorithm(None, update, None, None, None, None, None)  # type: ignore[arg-type]
    batch = Transition(jnp.zeros((2, 1)), jnp.zeros(2, jnp.int32), jnp.array([1.0, -2.0]), jnp.ones(2),
                       jnp.zeros((2, 1)))
    with_reward_scale(algo, 0.5).update(0, batch)
    np.testing.assert_allclose(seen[0], [0.5, -1.0])
