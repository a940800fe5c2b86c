"""Running the package's commands as a user would, in a subprocess from the repository root (shared by the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "dqn_cartpole.yaml")


def run(cmd: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def command(module: str, *args: str) -> list[str]:
    """`python -m jaxrl_dist.<module> ARGS`."""
    return [sys.executable, "-m", f"jaxrl_dist.{module}", *args]


def train_cmd(root: Path, name: str, *sets: str, config: str | Path = DEFAULT, extra: tuple[str, ...] = ()
              ) -> list[str]:
    """`train` of `config` into `root/name`, quiet, without TensorBoard, with `--set` for each of `sets`."""
    cmd = command("train", "--config", str(config), "--exp-name", name, "--quiet", "--set", f"log.root={root}",
                  "--set", "log.tensorboard=false", *extra)
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train(root: Path, name: str, *sets: str, config: str | Path = DEFAULT, extra: tuple[str, ...] = (),
          env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(train_cmd(root, name, *sets, config=config, extra=extra), timeout=timeout, env=env)


def with_env(**variables: str) -> dict[str, str]:
    """This process's environment plus `variables`."""
    return {**os.environ, **variables}


def fake_devices(n: int) -> dict[str, str]:
    """An environment in which JAX sees `n` CPU devices."""
    return with_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
