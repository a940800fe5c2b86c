"""Config loading: formats, $global, --set, typed errors with the key named, derived sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxrl_dist.config import build, load_config, plan
from jaxrl_dist.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_global_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "$global:\n  seed: 7\n  num_envs: 4\nenv:\n  id: CartPole-v1\nalgo:\n  lr: 1e-3\n")
    cfg = load_config(path, ["algo.gamma=0.9", "network.hidden=[32, 32]"])
    assert cfg.train.seed == 7 and cfg.env.num_envs == 4
    assert cfg.algo.lr == pytest.approx(1e-3)  # YAML reads `1e-3` as a string; the schema makes it a float
    assert cfg.algo.gamma == pytest.approx(0.9) and cfg.network.hidden == (32, 32)
    assert load_config(path, seed=3).train.seed == 3


def test_section_value_beats_global(tmp_path: Path) -> None:
    path = write(tmp_path, "$global:\n  num_envs: 4\nenv:\n  num_envs: 2\n")
    assert load_config(path).env.num_envs == 2


def test_python_config(tmp_path: Path) -> None:
    path = write(tmp_path, "config = {'env': {'num_envs': 3}, 'algo': {'double': False}}\n", "c.py")
    cfg = load_config(path)
    assert cfg.env.num_envs == 3 and cfg.algo.double is False


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("algo:\n  lrr: 1\n", [], "'algo.lrr' is unknown; did you mean 'algo.lr'?"),
        ("algo:\n  lr: -1\n", [], "'algo.lr': value -1 is out of range; allowed: > 0"),
        ("env:\n  num_envs: many\n", [], "'env.num_envs': value 'many' is not allowed; allowed: an integer"),
        ("roles:\n  mode: threads\n", [], "one of 'async', 'serial'"),
        ("algo:\n  name: a2c\n", [], "'algo.name': value 'a2c' is not allowed; allowed: dqn"),
        ("", ["env.batch_size=100"], "'env.batch_size': value 100 is larger than env.num_envs"),
        ("", ["network.hidden=[64, 0]"], "'network.hidden'"),
        ("", ["train.learning_starts=10"], "'train.learning_starts': value 10 is below replay.batch_size"),
        ("$global:\n  nope: 1\n", [], "'$global.nope' matches no field"),
        ("env: [1, 2]\n", [], "'env' must be a mapping"),
        ("", ["algo"], "expected key.sub=value"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="allowed: .yaml, .yml, .py"):
        load_config(write(tmp_path, "{}", "c.toml"))


def test_derived_sizes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "env:\n  num_envs: 8\n  batch_size: 4\nalgo:\n  n_step: 3\n"))
    sizes = plan(cfg)
    assert sizes.env_batch == 4 and sizes.write_margin == 12
    assert sizes.ratio_slack >= cfg.roles.learner.updates_per_call / cfg.train.replay_ratio


def train_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The train command on the default config with experiments under tmp_path/exp."""
    cfg = ROOT / "configs" / "dqn_cartpole.yaml"
    return subprocess.run(
        [sys.executable, "-m", "jaxrl_dist.train", "--config", str(cfg), "--set", f"log.root={tmp_path / 'exp'}", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )


def test_cli_error_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    proc = train_cli(tmp_path, "--set", "algo.gama=0.9")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "did you mean 'algo.gamma'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists()


def test_cli_exp_name_cannot_escape(tmp_path: Path) -> None:
    proc = train_cli(tmp_path, "--exp-name", "../outside")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "outside").exists()


def test_eval_threads_take_the_cores_a_run_leaves_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation envs get the cores the training envs, actors and learner leave (at least 1, at most one per
    episode); `eval.num_threads` overrides; an evaluation on its own gets one per core."""
    from jaxrl_dist.config.plan import eval_threads

    cfg = build({"env": {"num_envs": 16, "num_threads": 4}, "eval": {"episodes": 10}})
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert plan(cfg).eval_threads == 1  # 4 env threads + actor + learner on 2 cores: none free
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert plan(cfg).eval_threads == 10  # 58 free, one per episode at most
    monkeypatch.setattr("os.cpu_count", lambda: 12)
    assert plan(cfg).eval_threads == 6
    assert eval_threads(cfg) == 10  # nothing else running
    assert plan(build({"eval": {"num_threads": 3}})).eval_threads == 3
