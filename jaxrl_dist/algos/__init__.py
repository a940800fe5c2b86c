"""Algorithms as pure functions (see `jaxrl_dist.algos.base.Algorithm`) and their registry."""

from __future__ import annotations

from typing import Callable

from jaxrl_dist.algos.base import Algorithm, GradReduce, Transition, no_reduce
from jaxrl_dist.algos.dqn import make as make_dqn

REGISTRY: dict[str, Callable[..., Algorithm]] = {"dqn": make_dqn}


def make_algorithm(spec, cfg, grad_reduce: GradReduce = no_reduce) -> Algorithm:  # noqa: ANN001
    """The algorithm named by `cfg.algo.name`, built for an env spec."""
    return REGISTRY[cfg.algo.name](spec, cfg, grad_reduce)


__all__ = ["Algorithm", "GradReduce", "REGISTRY", "Transition", "make_algorithm", "no_reduce"]
