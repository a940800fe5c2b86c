"""Configs and runs as a new user meets them: shipped configs found by name from any directory and inside the wheel,
`--print-config`, default experiment names that never make a second run (or a second seed) fail, and the
compilation cache (`roles.compile_cache`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from cli_runs import ROOT, command, run

from jaxrl_dist.config.load import SHIPPED, config_path, shipped_configs


def test_configs_dir_is_the_package_copy() -> None:
    assert (ROOT / "configs").resolve() == SHIPPED  # one copy: the repository's configs/ points into the package
    assert "dqn_cartpole" in shipped_configs() and config_path("dqn_cartpole") == SHIPPED / "dqn_cartpole.yaml"


def test_print_config_by_name_from_another_directory(tmp_path: Path) -> None:
    proc = subprocess.run(command("train", "--config", "sac_pendulum", "--set", "algo.actor_lr=0.002", "--print-config"),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["env"]["id"] == "Pendulum-v1" and cfg["algo"]["actor_lr"] == 0.002 and "checkpoint" in cfg
    assert not (tmp_path / "experiments").exists()  # printed, nothing run
    bad = subprocess.run(command("train", "--config", "sac_pendulm", "--print-config"), capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "names no shipped config; shipped: ddqn_catch" in bad.stderr, bad.stderr


def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("jaxrl_dist-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"jaxrl_dist/configs/{n}.yaml" for n in shipped_configs()} <= names


def test_default_names_take_the_seed_and_a_free_suffix(tmp_path: Path) -> None:
    sets = ["--quiet", "--set", f"log.root={tmp_path}", "--set", "log.tensorboard=false", "--set",
            "roles.mode=serial", "--set", "train.total_env_steps=400", "--set", "train.learning_starts=200",
            "--set", "eval.interval=0", "--set", "checkpoint.interval=0"]
    for expected in ("dqn_cartpole", "dqn_cartpole-2"):
        proc = run(command("train", "--config", "dqn_cartpole", *sets))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"experiment: {tmp_path / expected}" in proc.stdout, proc.stdout
    assert "note: experiment dqn_cartpole holds a previous run; this one is dqn_cartpole-2" in proc.stdout
    seeded = run(command("train", "--config", "dqn_cartpole", "--seed", "3", *sets))
    assert seeded.returncode == 0 and f"experiment: {tmp_path / 'dqn_cartpole_seed3'}" in seeded.stdout
    assert yaml.safe_load((tmp_path / "dqn_cartpole_seed3" / "config.yaml").read_text())["train"]["seed"] == 3


def test_compile_cache_is_filled_and_used(tmp_path: Path) -> None:
    """`roles.compile_cache`: the first run writes its programs there, the second loads them (and says how many)."""
    cache = tmp_path / "xla"
    sets = ["--quiet", "--set", f"log.root={tmp_path}", "--set", "log.tensorboard=false", "--set",
            "roles.mode=serial", "--set", "train.total_env_steps=400", "--set", "train.learning_starts=200",
            "--set", "eval.interval=0", "--set", f"roles.compile_cache={cache}"]
    first = run(command("train", "--config", "dqn_cartpole", "--exp-name", "a", *sets))
    assert first.returncode == 0, first.stderr[-2000:]
    written = len(list(cache.iterdir()))
    assert written >= 3, first.stdout  # the policy, the learner call, the init at least
    second = run(command("train", "--config", "dqn_cartpole", "--exp-name", "b", *sets))
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"compile cache: {cache} ({written} programs before this run)" in second.stdout, second.stdout
    assert len(list(cache.iterdir())) == written  # nothing compiled anew
