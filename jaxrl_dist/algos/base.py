"""The algorithm protocol every algorithm module follows: pure functions over an explicit state.

An algorithm is built once per run by `make(spec, config, context)` from the env spec, its own config section and a
`BuildContext` (network config, gradient reduction, run sizes), and hands the system a bundle of pure, jit-able functions. The system (roles/) decides where they run, how batches reach them and
how gradients are reduced across devices; the algorithm never touches threads, devices or files.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple

# Records the algorithms share with the replay and the roles; they live low (jaxrl_dist.records) and are offered here
# too, where an algorithm's author looks for them.
from jaxrl_dist.records import Prioritized, PrioritizedBatch, Segment, Transition  # noqa: F401  # offered here

if TYPE_CHECKING:  # this module is imported to register algorithms and load configs: no JAX at import time
    import jax

GradReduce = Callable[[Any], Any]
"""Reduces a gradient pytree across data-parallel shards (identity on one device); injected by the system."""


def no_reduce(grads: Any) -> Any:
    return grads


def shard_key(grad_reduce: GradReduce, key: jax.Array) -> jax.Array:
    """`key` made unique to this shard of a sharded learner (unchanged on one device).

    An update that samples noise per transition (SAC's policy samples, say) draws it with this key, so that the
    shards of a batch do not repeat each other's noise. A key kept in the state must stay the unfolded one, which is
    the same on every shard.
    """
    fold = getattr(grad_reduce, "fold_in_shard", None)
    return fold(key) if fold is not None else key


class Algorithm(NamedTuple):
    """The pure functions of one algorithm, closed over its networks and optimizer.

    Attributes:
        init: `key -> state`, the full learner state (a flax.struct.dataclass).
        update: `(state, batch) -> (state, metrics)` for one shard; jit-able; metrics are scalars.
        act: `(params, obs [B, ...], key, exploration) -> (actions [B, *action_shape], key)`, the exploring policy
            of actors, given `exploration(env_steps)` (for `data="segments"`: `(record, key)`, a pytree with an
            `action` field, see `AlgorithmDef`).
        eval_act: `(params, obs [B, ...]) -> actions [B, *action_shape]`, the greedy / deterministic policy.
        inference: `(params, obs [B, ...]) -> {name: [B, ...]}`, the deployable policy: what evaluation and export
            run. Its "action" entry is `eval_act`'s action; the other entries are the algorithm's policy outputs
            (DQN: "q_values" `[B, A]` float32). Observations are raw env observations (uint8 frames included):
            any scaling belongs inside, so that an exported graph takes what the env gives.
        actor_params: `state -> params` the actors and the evaluator need.
        exploration: `env_steps -> float`, the actors' exploration parameter at this process's env steps (epsilon
            for DQN; for SAC 1 during its uniform warm-up, else 0). A plain Python function of the count: the
            actor evaluates it on the host and passes the number to `act`.
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    act: Callable[[Any, jax.Array, jax.Array, Any], tuple[Any, jax.Array]]  # actions, or a record (segments)
    eval_act: Callable[[Any, jax.Array], jax.Array]
    actor_params: Callable[[Any], Any]
    exploration: Callable[[int], float]
    inference: Callable[[Any, jax.Array], dict[str, jax.Array]]


def entropy_explorer(init: Callable[[jax.Array], Any], update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
                     act: Callable[..., tuple[Any, jax.Array]],
                     inference: Callable[[Any, jax.Array], dict[str, jax.Array]],
                     actor_params: Callable[[Any], Any],
                     exploration: Callable[[int], float] | None = None) -> Algorithm:
    """The `Algorithm` of one whose exploration is its policy's own entropy (SAC, PPO): the deterministic policy is
    `inference`'s action, and there is no exploration schedule (0) unless `exploration` gives one (SAC's uniform
    warm-up)."""
    return Algorithm(init=init, update=update, act=act, eval_act=lambda params, obs: inference(params, obs)["action"],
                     actor_params=actor_params, exploration=exploration or (lambda env_steps: 0.0),
                     inference=inference)


class BuildContext(NamedTuple):
    """What an algorithm's `make` gets besides its own config section: the network config and the run's numbers
    that an algorithm may need (from the run's plan, `jaxrl_dist.config.plan`).

    Attributes:
        network: the `network` config section (`jaxrl_dist.config.schema.NetworkConfig`): torso, hidden sizes,
            activation, dueling head, torso kwargs.
        grad_reduce: reduces gradients (or any pytree) over the learner's data-parallel shards; identity on one
            device. `update` must reduce its gradients with it.
        total_updates: learner updates this process makes in the whole run (a learning-rate schedule anneals over
            them); 0 where unknown (an algorithm built only to run a policy, e.g. for export).
        learning_starts: env steps of this process before its first update (`Plan.fill`: its share of
            `train.learning_starts` plus the steps n-step windows hold back), counted like the `env_steps` that
            `exploration` gets; 0 on the segments path and where unknown (a policy-only build never acts).
    """

    network: Any
    grad_reduce: GradReduce = no_reduce
    total_updates: int = 0
    learning_starts: int = 0


@dataclasses.dataclass(frozen=True)
class AlgorithmDef:
    """An algorithm as the system knows it: its config section, its builder and what its learner consumes.

    Built-in algorithms are registered under a short name (`dqn`); a user's is named in the config as
    `algo.name: package.module:NAME`, where `NAME` is an `AlgorithmDef` (see docs/extending.md).

    Attributes:
        config: The frozen dataclass of the `algo` config section. It needs a `name: str` field (the config's
            `algo.name`); every other field is a hyperparameter with a default, documented like the built-ins'
            (`jaxrl_dist.config.schema.fld`), and `--set algo.KEY=VALUE` reaches it.
        make: `make(spec, config, context) -> Algorithm`, the pure functions for an env spec, the algorithm's own
            config section (an instance of `config`) and a `BuildContext` (network config, gradient reduction,
            run sizes). `update` must reduce its gradients with `context.grad_reduce` (identity on one device, a
            collective where the system shards the batch).
        data: What the learner feeds `update`, which names the run's data path: "replay", a `Transition` batch
            `[B, ...]` sampled from the host replay (n-step returns precomputed with the config's `gamma` and
            `n_step`); with `replay.prioritized`, a `PrioritizedBatch` (the update then weighs its losses and
            returns `Prioritized(metrics, priority)`, see there);
            or "segments" (on-policy), one actor's `Segment` `[B, T + 1, ...]` per update, with `T` the config's
            `segment_length`. A segments algorithm's `act` returns `(record, key)`: `record` is a pytree with an
            `action` field (what the env gets), all leaves `[B, ...]`, stored in the segment as `Segment.policy`.
        action_kinds: The action spaces it handles (`EnvSpec.action_kind`): any of "discrete", "continuous" and
            "multi_discrete" (`[B, D]` int32 actions, dimension d in 0..nvec[d] - 1).
    """

    config: type
    make: Callable[..., Algorithm]
    data: Literal["replay", "segments"] = "replay"
    action_kinds: tuple[str, ...] = ("discrete", "continuous")


def lazy_make(module: str) -> Callable[..., Algorithm]:
    """A `make` that imports `module` (and with it JAX, flax and optax) only when an algorithm is built, so that the
    registry and config loading stay light."""

    def make(*args: Any, **kwargs: Any) -> Algorithm:
        return importlib.import_module(module).make(*args, **kwargs)

    make.__doc__ = f"`{module}.make`, imported on first use."
    return make


def lazy_attributes(module: str, names: tuple[str, ...]) -> Callable[[str], Any]:
    """A module `__getattr__` that takes `names` from `module` on first use (PEP 562)."""

    def getattr_(attr: str) -> Any:
        if attr in names:
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module has no attribute {attr!r}")

    return getattr_


def metrics_of(out: Any) -> dict[str, Any]:
    """The scalar metrics of what an update returned (`Prioritized` for a `PrioritizedBatch`, else the dict)."""
    return out.metrics if isinstance(out, Prioritized) else out
