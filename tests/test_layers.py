"""The package's layers: no import runs from a lower layer up to the roles, the replay is plain data structures, the
shared records import nothing, and the light modules stay light (no JAX when a config is loaded or a replay used)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxrl_dist"
# Entry points and tools above the roles: they may import anything.
TOP = ("train", "launch", "report", "evaluate", "plot", "export", "bench", "slurm")


def imports(path: Path) -> set[str]:
    """Every `jaxrl_dist...` module a file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxrl_dist"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("jaxrl_dist"))
    return found


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_only_entry_points_import_the_roles() -> None:
    offenders = {name: sorted(i for i in imports(path) if i.startswith("jaxrl_dist.roles"))
                 for name, path in modules().items() if layer_of(name) not in ("roles", *TOP)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_replay_holds_data_structures_only() -> None:
    allowed = ("jaxrl_dist.replay", "jaxrl_dist.records", "jaxrl_dist.envs.spec", "jaxrl_dist.errors")
    offenders = {name: sorted(i for i in imports(path) if not i.startswith(allowed))
                 for name, path in modules().items() if layer_of(name) == "replay"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_records_import_nothing_of_the_package() -> None:
    assert imports(PACKAGE / "records.py") == set()


@pytest.mark.parametrize("module", ["jaxrl_dist.replay", "jaxrl_dist.records", "jaxrl_dist.config",
                                    "jaxrl_dist.algos"])
def test_light_modules_do_not_import_jax(module: str) -> None:
    code = (f"import sys, {module}; heavy = [m for m in ('jax', 'flax', 'optax') if m in sys.modules]; "
            f"print(heavy); sys.exit(bool(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
