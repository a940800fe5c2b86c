"""Session fixtures and settings shared by test modules: the real Slurm cluster of tests/slurm_cluster.py, and one
JAX compilation cache for the session (every test and every run it starts), so the many short runs of the same
configs compile their programs once (`JAXRL_TEST_COMPILE_CACHE=0` turns it off; `tests/test_faults.py`, which kills
runs at any moment, keeps its runs out of it)."""

from __future__ import annotations

import os
import shutil
import tempfile

from slurm_cluster import slurm_cluster

__all__ = ["slurm_cluster"]

_CACHE_VARS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
_session_cache: str | None = None


def pytest_configure(config: object) -> None:
    """Before any test module imports JAX: JAX reads these variables as its defaults, and child processes inherit
    them."""
    global _session_cache
    if os.environ.get("JAXRL_TEST_COMPILE_CACHE", "1") == "0" or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    _session_cache = tempfile.mkdtemp(prefix="jaxrl_tests_xla_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config: object) -> None:
    if _session_cache is not None:
        shutil.rmtree(_session_cache, ignore_errors=True)
        for var in _CACHE_VARS:
            os.environ.pop(var, None)
