"""Export to ONNX and SavedModel: parity in their own runtimes, the JAX-free example, metadata, bad input."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
import pytest

from jaxrl_dist.algos import make_algorithm
from jaxrl_dist.config import build
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.export import FORMATS, ParityError, export_policy, onnx_format, tf_format
from jaxrl_dist.export.signature import random_observations, signature_of
from jaxrl_dist.io.policy import LoadedPolicy, load_policy

import cli_runs
from cli_runs import ROOT, command, run, with_env

pytest.importorskip("onnxruntime", reason="ONNX export tests need the onnx extra: pip install -e '.[onnx]'")
pytest.importorskip("tensorflow", reason="SavedModel export tests need the tf extra: pip install -e '.[tf]'")

SAMPLES = 1000


def export_cmd(exp: Path, *args: str) -> list[str]:
    return command("export", "--experiment", str(exp), *args)


def without(module: str, tmp: Path) -> dict[str, str]:
    """An environment in which importing `module` fails, as on a machine where it is not installed."""
    shadow = tmp / f"no_{module}" / module
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text(f"raise ImportError('{module} is not installed here', name='{module}')\n")
    return with_env(PYTHONPATH=str(shadow.parent))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default config trained to a solved CartPole in serial mode (deterministic), exported with `--export all`."""
    root = tmp_path_factory.mktemp("runs")
    proc = cli_runs.train(root, "cartpole", "roles.mode=serial", extra=("--export", "all"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "export onnx: wrote" in proc.stdout and "export savedmodel: wrote" in proc.stdout, proc.stdout[-2000:]
    return root / "cartpole"


def export_dir(exp: Path) -> Path:
    (step_dir,) = (exp / "export").iterdir()
    return step_dir


def cnn_policy() -> LoadedPolicy:
    """A freshly initialised dueling Nature-CNN Q-network on uint8 [4, 84, 84] frames, as a policy to export."""
    cfg = build({"network": {"torso": "nature_cnn", "hidden": [64], "dueling": True}})
    spec = EnvSpec((4, 84, 84), "uint8", "discrete", 6, (), (), (), 0)
    algo = make_algorithm(spec, cfg)
    params = algo.actor_params(algo.init(jax.random.PRNGKey(3)))
    return LoadedPolicy(Path("/nonexistent/cnn"), 0, cfg, spec, algo, params, {})


def continuous_policy() -> LoadedPolicy:
    """A deterministic tanh-Gaussian actor on a 3-d observation with bounds [-2, 2] x [0, 1]: the shape of output
    the continuous-control algorithms export (`action` scaled to the env's bounds, `mean`, `log_std`)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxrl_dist.algos import Algorithm
    from jaxrl_dist.networks import MLP

    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    spec = EnvSpec((3,), "float32", "continuous", 0, (2,), tuple(low), tuple(high), 0)

    class Actor(nn.Module):
        @nn.compact
        def __call__(self, obs: jax.Array) -> jax.Array:
            return nn.Dense(4)(MLP((32, 32), "tanh")(obs))

    net = Actor()

    def inference(params, obs):  # noqa: ANN001, ANN202
        mean, log_std = jnp.split(net.apply(params, obs), 2, axis=-1)
        action = low + (jnp.tanh(mean) + 1.0) * 0.5 * (high - low)
        return {"action": action, "mean": mean, "log_std": jnp.clip(log_std, -5.0, 2.0)}

    params = net.init(jax.random.PRNGKey(5), jnp.zeros((1, 3)))
    algo = Algorithm(None, None, None, None, lambda s: s, None, inference)  # type: ignore[arg-type]
    return LoadedPolicy(Path("/nonexistent/sac"), 0, build({}), spec, algo, params, {})


def test_continuous_policy_parity(tmp_path: Path) -> None:
    """Float actions already scaled to the bounds: max abs difference <= 1e-5 on 1,000 observations."""
    policy = continuous_policy()
    results = export_policy(policy, ["onnx", "savedmodel"], tmp_path, samples=64, log=lambda _: None)
    obs = random_observations(signature_of(policy), SAMPLES, seed=4)
    want = jax.device_get(jax.jit(policy.algo.inference)(policy.params, obs))
    for result in results:
        got = FORMATS[result.format].load(result.path)(obs)
        assert set(got) == {"action", "mean", "log_std"}
        for name in want:
            assert np.abs(got[name] - want[name]).max() <= 1e-5, (result.format, name)
        assert (got["action"] >= [-2.0, 0.0]).all() and (got["action"] <= [2.0, 1.0]).all()
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert meta["action_space"] == {"kind": "continuous", "shape": [2], "low": [-2.0, 0.0], "high": [2.0, 1.0]}
    assert meta["outputs"][0] == {"name": "action", "shape": ["batch", 2], "dtype": "float32"}


def assert_parity(policy: LoadedPolicy, runner, obs: np.ndarray) -> None:  # noqa: ANN001
    want = jax.device_get(jax.jit(policy.algo.inference)(policy.params, obs))
    got = runner(obs)
    assert set(got) == set(want) == {"action", "q_values"}
    # Q-values are sums of magnitude up to ~1e3 on random inputs, whose float32 rounding step is ~1e-4: compare
    # relative to their scale. Greedy actions must be identical.
    scale = max(1.0, float(np.abs(want["q_values"]).max()))
    assert np.abs(got["q_values"] - want["q_values"]).max() <= 1e-5 * scale
    np.testing.assert_array_equal(got["action"], want["action"])
    assert got["action"].dtype == np.int32 and got["q_values"].dtype == np.float32


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_trained_policy_parity(trained: Path, fmt: str) -> None:
    """1,000 random observations through onnxruntime / TensorFlow vs the JAX policy of the checkpoint."""
    policy = load_policy(trained)
    obs = random_observations(signature_of(policy), SAMPLES, seed=1)
    path = export_dir(trained) / ("policy.onnx" if fmt == "onnx" else "savedmodel")
    assert_parity(policy, FORMATS[fmt].load(path), obs)
    assert_parity(policy, FORMATS[fmt].load(path), obs[:1])  # the batch dimension is dynamic


def test_cnn_uint8_dueling_parity(tmp_path: Path) -> None:
    """Raw uint8 frames go in (scaling is inside the graph); both formats match JAX on 1,000 frames."""
    policy = cnn_policy()
    results = export_policy(policy, ["onnx", "savedmodel"], tmp_path, samples=64, log=lambda _: None)
    obs = random_observations(signature_of(policy), SAMPLES, seed=2)
    assert obs.dtype == np.uint8
    for result in results:
        assert_parity(policy, FORMATS[result.format].load(result.path), obs)


def test_metadata_names_inputs_outputs_and_spaces(trained: Path) -> None:
    import onnxruntime as ort
    import tensorflow as tf

    out = export_dir(trained)
    session = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["jaxrl_dist"])
    assert meta["algo"] == "dqn" and meta["env_id"] == "CartPole-v1"
    assert meta["checkpoint_step"] == int(out.name)
    assert meta["inputs"] == [{"name": "obs", "shape": ["batch", 4], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "action", "shape": ["batch"], "dtype": "int32"},
                               {"name": "q_values", "shape": ["batch", 2], "dtype": "float32"}]
    assert meta["action_space"] == {"kind": "discrete", "n": 2}
    assert [i.name for i in session.get_inputs()] == ["obs"]
    assert [o.name for o in session.get_outputs()] == ["action", "q_values"]
    assert session.get_inputs()[0].shape == ["batch", 4]
    saved = json.loads(tf.saved_model.load(str(out / "savedmodel")).metadata.numpy().decode())
    assert saved["outputs"] == meta["outputs"] and saved["format"] == "savedmodel"
    assert json.loads((out / "policy.json").read_text())["format"] == "onnx,savedmodel"


def test_onnx_example_without_jax_reaches_trained_return(trained: Path, tmp_path: Path) -> None:
    """The docs/export.md example (onnxruntime + numpy + gymnasium, JAX import blocked) acts exactly as the JAX policy."""
    episodes = 5
    proc = run([sys.executable, str(ROOT / "examples" / "onnx_policy.py"), str(export_dir(trained) / "policy.onnx"),
                "--episodes", str(episodes)], env=without("jax", tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [float(x) for x in re.findall(r"episode \d+: return ([\d.]+)", proc.stdout)]
    policy = load_policy(trained)
    act = jax.jit(policy.algo.eval_act)
    env = gym.make("CartPole-v1")
    want = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(act(policy.params, obs[None].astype(np.float32))[0]))
            total, done = total + float(reward), terminated or truncated
        want.append(total)
    assert got == want
    assert np.mean(got) >= 0.9 * policy.meta.best_eval >= 0.9 * 475


def test_savedmodel_serves_without_jax(trained: Path, tmp_path: Path) -> None:
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = f(obs=tf.constant(np.zeros((3, 4), np.float32)))\n"
        "print(out['action'].numpy().tolist(), out['q_values'].shape)\n"
    )
    proc = run([sys.executable, "-c", script, str(export_dir(trained) / "savedmodel")], env=without("jax", tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    policy = load_policy(trained)
    want = np.asarray(policy(np.zeros((3, 4), np.float32))["action"]).tolist()
    assert proc.stdout.strip().splitlines()[-1] == f"{want} (3, 2)"


def test_failed_parity_replaces_nothing(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(export_dir(trained) / "policy.onnx", out / "policy.onnx")
    before = (out / "policy.onnx").read_bytes()

    def broken(fmt, path, fn, sig, samples):  # noqa: ANN001, ANN202
        raise ParityError("simulated mismatch")

    monkeypatch.setattr("jaxrl_dist.export._verify", broken)
    with pytest.raises(ParityError):
        export_policy(load_policy(trained), ["onnx"], out, log=lambda _: None)
    assert (out / "policy.onnx").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["policy.onnx"]  # no temporary left behind


def test_bad_input_is_one_line_and_writes_nothing(trained: Path, tmp_path: Path) -> None:
    missing = run(export_cmd(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr

    no_step = run(export_cmd(trained, "--step", "7", "--out", str(tmp_path / "o1")))
    assert no_step.returncode == 2 and "no checkpoint for step 7" in no_step.stderr and "available steps" in no_step.stderr
    assert not (tmp_path / "o1").exists()

    bad_step = run(export_cmd(trained, "--step", "last", "--out", str(tmp_path / "o1")))
    assert bad_step.returncode == 2 and "'latest' or 'best'" in bad_step.stderr and not (tmp_path / "o1").exists()

    bad_format = run(export_cmd(trained, "--format", "tflite", "--out", str(tmp_path / "o2")))
    assert bad_format.returncode == 2 and "onnx, savedmodel, all" in bad_format.stderr
    assert not (tmp_path / "o2").exists()

    # A damaged copy of the experiment: truncate every array file of its checkpoint.
    damaged = tmp_path / "damaged"
    shutil.copytree(trained, damaged, ignore=shutil.ignore_patterns("export"))
    for f in (damaged / "checkpoints").rglob("*"):
        if f.is_file() and "state" in f.parts and f.stat().st_size > 64:
            f.write_bytes(f.read_bytes()[:16])
    corrupt = run(export_cmd(damaged, "--out", str(tmp_path / "o3")))
    assert corrupt.returncode == 2 and corrupt.stderr.startswith("error: checkpoint ") and "unreadable" in corrupt.stderr
    assert corrupt.stderr.count("\n") == 1, corrupt.stderr
    assert not (tmp_path / "o3").exists() and not (damaged / "export").exists()


def test_missing_tensorflow_is_a_one_line_error(trained: Path, tmp_path: Path) -> None:
    proc = run(export_cmd(trained, "--format", "savedmodel", "--out", str(tmp_path / "o")),
               env=without("tensorflow", tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: SavedModel export needs TensorFlow, which is not installed: {tf_format.EXTRA_HINT}"
    assert not (tmp_path / "o").exists()
    train = cli_runs.train(tmp_path, "never", extra=("--export", "all"), env=without("tensorflow", tmp_path))
    assert train.returncode == 2 and "pip install 'jaxrl_dist[tf]'" in train.stderr
    assert not (tmp_path / "never").exists()  # refused before the experiment directory is created


def test_export_cli_to_out_folder(trained: Path, tmp_path: Path) -> None:
    proc = run(export_cmd(trained, "--step", "best", "--format", "onnx", "--out", str(tmp_path / "o"),
                          "--samples", "100"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parity on 100 random observations" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["policy.json", "policy.onnx"]
    (best_step,) = (int(p.name) for p in (trained / "checkpoints_best").iterdir() if p.name.isdigit())
    assert json.loads((tmp_path / "o" / "policy.json").read_text())["checkpoint_step"] == best_step
    assert onnx_format.FILE_NAME == "policy.onnx"
