"""Checkpoints of a run's roles: what is saved (the learner state, the actors' keys, the typed meta) and how a
freshly built graph takes a checkpoint back (`--resume`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxrl_dist.config import to_dict
from jaxrl_dist.io.checkpoint import Checkpointer, CheckpointMeta
from jaxrl_dist.io.policy import checkpoint_target
from jaxrl_dist.roles.graph import Graph
from jaxrl_dist.roles.sync import Counters


def checkpoint_tree(graph: Graph, state: Any) -> dict[str, Any]:
    """A checkpoint's arrays: the learner state and the actors' RNG keys, on the host."""
    return jax.device_get({"learner": state, "actor_keys": jnp.stack([a.key for a in graph.actors])})


def checkpoint_meta(graph: Graph, steps: int, updates: int, best_eval: float | None,
                    eval_stats: dict[str, float] | None = None) -> CheckpointMeta:
    """The meta of a checkpoint of `graph` at `steps` env steps (the run's) and `updates` updates."""
    g = graph
    return CheckpointMeta(config=to_dict(g.cfg), env_spec=g.spec.to_dict(), algo=g.cfg.algo.name,
                          actors=len(g.actors), env_steps=steps, updates=updates,
                          group_env_steps=g.limiter.env_steps, sampler_rng=g.path.rng_state(), best_eval=best_eval,
                          eval=eval_stats)


def restore(graph: Graph, ckpt: Checkpointer, step: int | None = None) -> CheckpointMeta:
    """Loads a checkpoint into a freshly built graph (same config); returns its meta. With groups every group
    loads group 0's checkpoint, and its actors fold their group into the saved keys."""
    g = graph
    tree, raw, extra = ckpt.restore(step, target=checkpoint_target(g.algo, len(g.actors)))
    meta = CheckpointMeta.parse(raw, ckpt.directory / str(step if step is not None else ckpt.latest_step()))
    g.learner.install(g.placement.put_replicated(tree["learner"]), meta.updates)
    for actor, key in zip(g.actors, tree["actor_keys"]):
        if g.group is not None and not g.lead:
            key = jax.random.fold_in(key, g.group.rank)
        actor.key = jax.device_put(key, actor.device)
    if g.lead and meta.sampler_rng is not None:
        g.path.set_rng_state(meta.sampler_rng)
    if extra is not None and g.group is None:  # with groups each group refills its own replay
        g.path.load_state_dict(extra)
    return meta


def read_counters(ckpt: Checkpointer, save_replay: bool) -> Counters:
    """Where a resumed run starts: the latest checkpoint's counters (each group from group 0's own env steps)."""
    latest = ckpt.latest_step()
    meta = CheckpointMeta.parse(ckpt.read_meta(), ckpt.directory / str(latest))
    return Counters(meta.group_env_steps, meta.updates, replay_restored=save_replay,
                    peer_steps=meta.env_steps - meta.group_env_steps)
