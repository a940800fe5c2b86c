"""Algorithms as pure functions (see `jaxrl_dist.algos.base.Algorithm`), the built-in registry, and the loading and
checking of users' algorithms named `package.module:NAME`.

The registry is the one place an algorithm is named: its `AlgorithmDef` gives the config section class (config
loading picks it by `algo.name`), the builder and the data path its learner consumes. Importing this package does
not import JAX: each built-in's JAX code loads when an algorithm is built.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from jaxrl_dist.algos.base import (Algorithm, AlgorithmDef, BuildContext, GradReduce, Prioritized, PrioritizedBatch,
                                   Segment, Transition, no_reduce)
from jaxrl_dist.algos.dqn import DQN
from jaxrl_dist.algos.ppo import PPO
from jaxrl_dist.algos.sac import SAC
from jaxrl_dist.errors import UserError
from jaxrl_dist.plugins import import_object, is_plugin_path

REGISTRY: dict[str, AlgorithmDef] = {"dqn": DQN, "sac": SAC, "ppo": PPO}
REPLAY_CONFIG_FIELDS = ("gamma", "n_step")  # the replay writer computes n-step returns with them
SEGMENT_CONFIG_FIELDS = ("segment_length",)  # the actors cut segments of this many steps


def resolve_algorithm(name: str) -> AlgorithmDef:
    """The `AlgorithmDef` of a built-in name or of `package.module:NAME`, checked.

    Raises:
        UserError: An unknown built-in name, a module that does not import, or an object that is not a usable
            `AlgorithmDef`; the message names the object and what it lacks.
    """
    if not isinstance(name, str) or not is_plugin_path(name):
        if name not in REGISTRY:
            raise UserError(
                f"config key 'algo.name': value {name!r} is not allowed; allowed: {', '.join(sorted(REGISTRY))}, "
                f"or 'package.module:NAME' of your own AlgorithmDef"
            )
        return REGISTRY[name]
    what = f"custom algorithm '{name}'"
    obj = import_object(name, "custom algorithm")
    if not isinstance(obj, AlgorithmDef):
        kind = "class" if isinstance(obj, type) else type(obj).__name__
        raise UserError(f"{what} is a {kind}, not a jaxrl_dist.algos.AlgorithmDef(config=..., make=...)")
    cfg_cls = obj.config
    if not (isinstance(cfg_cls, type) and dataclasses.is_dataclass(cfg_cls)):
        raise UserError(f"{what}: its config {cfg_cls!r} is not a dataclass")
    params = getattr(cfg_cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise UserError(f"{what}: its config {cfg_cls.__name__} is not frozen (use @dataclasses.dataclass(frozen=True))")
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    needed = ("name", *(REPLAY_CONFIG_FIELDS if obj.data == "replay" else SEGMENT_CONFIG_FIELDS))
    missing = [f for f in needed if f not in fields]
    if missing:
        raise UserError(f"{what}: its config {cfg_cls.__name__} lacks the field(s) {', '.join(missing)} "
                        f"(every algorithm config has 'name'; a replay algorithm's also 'gamma' and 'n_step', a "
                        f"segments algorithm's 'segment_length')")
    no_default = [n for n, f in fields.items() if n != "name" and f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING]
    if no_default:
        raise UserError(f"{what}: config field(s) {', '.join(no_default)} of {cfg_cls.__name__} need a default")
    if obj.data not in ("replay", "segments"):
        raise UserError(f"{what}: data={obj.data!r} is not supported; allowed: 'replay', 'segments'")
    from jaxrl_dist.envs.spec import ACTION_KINDS  # here: built-in names load no env code

    bad_kinds = [k for k in obj.action_kinds if k not in ACTION_KINDS]
    if bad_kinds or not obj.action_kinds:
        raise UserError(f"{what}: action_kinds {obj.action_kinds!r} is not allowed; use any of "
                        f"{', '.join(map(repr, ACTION_KINDS))}")
    if not callable(obj.make):
        raise UserError(f"{what}: make is a {type(obj.make).__name__}, not a function")
    try:
        inspect.signature(obj.make).bind(None, None, None)
    except TypeError:
        raise UserError(f"{what}: make{inspect.signature(obj.make)} cannot be called as make(spec, config, context)"
                        ) from None
    except ValueError:  # no signature (a builtin): trust it
        pass
    return obj


def check_algorithm(algo: Any, name: str) -> Algorithm:
    """Checks what an `AlgorithmDef.make` returned: an `Algorithm` whose every function is callable.

    Raises:
        UserError: Naming the algorithm and the missing or wrong functions.
    """
    if not isinstance(algo, Algorithm):
        raise UserError(f"algorithm '{name}': make returned a {type(algo).__name__}, not a jaxrl_dist.algos.Algorithm")
    bad = [f for f in Algorithm._fields if not callable(getattr(algo, f))]
    if bad:
        raise UserError(f"algorithm '{name}': make returned an Algorithm whose {', '.join(bad)} "
                        f"{'is' if len(bad) == 1 else 'are'} not callable")
    return algo


def make_algorithm(spec, cfg, grad_reduce: GradReduce = no_reduce, plan=None) -> Algorithm:  # noqa: ANN001
    """The algorithm named by `cfg.algo.name`, built for an env spec from its own config section and a
    `BuildContext`, with the transforms the config asks for (`train.reward_scale`, `network.normalize_obs`; see
    `jaxrl_dist.algos.transforms`).

    Args:
        spec: the env spec.
        cfg: the whole config (the system's view: the algorithm itself receives `cfg.algo` and `cfg.network`).
        grad_reduce: the learner's gradient reduction over its shards.
        plan: the run's plan (`jaxrl_dist.config.Plan`), whose sizes the context carries (`total_updates`,
            `learning_starts` from `fill`); None for an algorithm built only to run a policy (export, evaluation).

    Raises:
        UserError: The algorithm does not handle the env's action space, or its `make` returned something unusable.
    """
    definition = resolve_algorithm(cfg.algo.name)
    if spec.action_kind not in definition.action_kinds:
        fits = sorted(n for n, d in REGISTRY.items() if spec.action_kind in d.action_kinds)
        raise UserError(f"config key 'algo.name': {cfg.algo.name} needs {' or '.join(definition.action_kinds)} "
                        f"actions but env {cfg.env.id} has {spec.action_kind} actions; allowed for it: "
                        f"{', '.join(fits) or 'none of the built-in algorithms yet'}")
    context = BuildContext(cfg.network, grad_reduce, plan.total_updates if plan is not None else 0,
                           plan.fill if plan is not None else 0)
    algo = check_algorithm(definition.make(spec, cfg.algo, context), cfg.algo.name)
    from jaxrl_dist.algos.transforms import with_obs_norm, with_reward_scale  # JAX: only once an algorithm is built

    if cfg.train.reward_scale != 1.0:
        algo = with_reward_scale(algo, cfg.train.reward_scale)
    if cfg.network.normalize_obs:
        algo = with_obs_norm(algo, spec.obs_shape, grad_reduce)
    return algo


__all__ = ["REGISTRY", "Algorithm", "AlgorithmDef", "BuildContext", "GradReduce", "Prioritized", "PrioritizedBatch",
           "Segment", "Transition", "check_algorithm", "make_algorithm", "no_reduce", "resolve_algorithm"]
