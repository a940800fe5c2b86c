"""Checkpoints of a run's roles: what is saved (the learner state, the actors' keys, the typed meta), how a
checkpoint is written without a compilation (a stop may come while a role compiles for minutes), and how a freshly
built graph takes a checkpoint back (`--resume`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrl_dist.config import to_dict
from jaxrl_dist.errors import UserError
from jaxrl_dist.io.checkpoint import Checkpointer, CheckpointMeta
from jaxrl_dist.io.policy import checkpoint_target
from jaxrl_dist.records import Snapshot
from jaxrl_dist.roles.evaluator import EvalResult, one_line
from jaxrl_dist.roles.graph import Graph
from jaxrl_dist.roles.signals import Signals
from jaxrl_dist.roles.sync import Counters


def checkpoint_tree(graph: Graph, state: Any) -> dict[str, Any]:
    """A checkpoint's arrays: the learner state and the actors' RNG keys, on the host.

    Only transfers, no computation: XLA compiles one program at a time, so a computation here (even a `jnp.stack`)
    would wait for a role's compilation in flight, which takes minutes for a large network on a CPU.
    """
    keys = np.stack([np.asarray(jax.device_get(a.key)) for a in graph.actors])
    return {"learner": jax.device_get(state), "actor_keys": keys}


def checkpoint_meta(graph: Graph, steps: int, updates: int, best_eval: float | None,
                    eval_stats: dict[str, float] | None = None, wandb_run_id: str | None = None) -> CheckpointMeta:
    """The meta of a checkpoint of `graph` at `steps` env steps (the run's) and `updates` updates; `wandb_run_id`:
    the W&B run that a resume continues."""
    g = graph
    return CheckpointMeta(config=to_dict(g.cfg), env_spec=g.spec.to_dict(), algo=g.cfg.algo.name,
                          actors=len(g.actors), env_steps=steps, updates=updates,
                          group_env_steps=g.limiter.env_steps, sampler_rng=g.path.rng_state(), best_eval=best_eval,
                          eval=eval_stats, wandb_run_id=wandb_run_id)


WAIT_SAY_S = 10.0  # how often a save that waits on the learner says so


def state_to_save(graph: Graph, say: Callable[[str], None]) -> Snapshot:
    """The newest learner state, read between learner calls and computed (a call in flight computes it): a wait on
    a long call (minutes of compilation, on a CPU) is said every 10 s."""
    start = said = time.monotonic()
    while True:
        try:
            snap = graph.learner.read_snapshot(graph.limiter.total_steps, timeout=WAIT_SAY_S)
            break
        except TimeoutError:
            doing = graph.timers.doing().get("learner", "the learner")
            say(f"waiting for the learner's call to end, to save its state: {doing}")
    leaves = jax.tree.leaves(snap.state)
    while not all(ready(x) for x in leaves):
        if time.monotonic() - said >= WAIT_SAY_S:
            said = time.monotonic()
            say(f"waiting for the learner's call in flight to compute the state to save ({said - start:.0f} s)")
        time.sleep(0.02)
    return snap


def ready(x: Any) -> bool:
    """Whether a device array's value is computed (host values always are)."""
    is_ready = getattr(x, "is_ready", None)
    return is_ready is None or bool(is_ready())


def save_checkpoint(graph: Graph, ckpt: Checkpointer, snap: Snapshot, best_eval: float | None, final: bool = False,
                    wandb_run_id: str | None = None) -> bool:
    """Writes `snap` (the replay too with `checkpoint.save_replay`), labelled with its env steps.

    The final save of a run may find a checkpoint of its env steps already (a periodic one, or the one a resumed run
    started from): it replaces it when that holds fewer updates, and writes nothing when it holds these. Returns
    whether a checkpoint was written.
    """
    replace = False
    if final and ckpt.latest_step() == snap.env_steps:
        saved = CheckpointMeta.parse(ckpt.read_meta(), ckpt.directory / str(snap.env_steps))
        if saved.updates == snap.updates:
            return False
        replace = True
    extra = graph.path.state_dict() if graph.cfg.checkpoint.save_replay else None
    meta = checkpoint_meta(graph, snap.env_steps, snap.updates, best_eval, wandb_run_id=wandb_run_id)
    return ckpt.save(snap.env_steps, checkpoint_tree(graph, snap.state), meta.to_dict(), extra, replace=replace)


def restore(graph: Graph, ckpt: Checkpointer, step: int | None = None) -> CheckpointMeta:
    """Loads a checkpoint into a freshly built graph (same config); returns its meta. With groups every group
    loads group 0's checkpoint, and its actors fold their group into the saved keys.

    Raises:
        UserError: A damaged checkpoint: unreadable, garbled meta fields, a sampler state or a saved replay that does
            not fit this run (never broadcast into it).
    """
    g = graph
    tree, raw, extra = ckpt.restore(step, target=checkpoint_target(g.algo, len(g.actors)))
    where = ckpt.directory / str(step if step is not None else ckpt.latest_step())
    meta = CheckpointMeta.parse(raw, where)
    g.learner.install(g.placement.put_replicated(tree["learner"]), meta.updates)
    for actor, key in zip(g.actors, tree["actor_keys"]):
        if g.group is not None and not g.lead:
            key = jax.random.fold_in(key, g.group.rank)
        actor.key = jax.device_put(key, actor.device)
    if g.lead and meta.sampler_rng is not None:
        _damaged(where, "sampler_rng", g.path.set_rng_state, meta.sampler_rng)
    if extra is not None and g.group is None:  # with groups each group refills its own replay
        _damaged(where, "saved replay", g.path.load_state_dict, extra)
    return meta


def _damaged(where: Path, what: str, load: Any, value: Any) -> None:
    """`load(value)`, a damaged or foreign `value` reported as one line naming the checkpoint."""
    try:
        load(value)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"checkpoint {where} is damaged or of another config: its {what} does not fit this run "
                        f"({one_line(err)})") from None


def read_counters(ckpt: Checkpointer, save_replay: bool) -> Counters:
    """Where a resumed run starts: the latest checkpoint's counters (each group from group 0's own env steps)."""
    latest = ckpt.latest_step()
    meta = CheckpointMeta.parse(ckpt.read_meta(), ckpt.directory / str(latest))
    return Counters(meta.group_env_steps, meta.updates, replay_restored=save_replay,
                    peer_steps=meta.env_steps - meta.group_env_steps)


class RunSaver:
    """The checkpoints one run writes: its newest state to `checkpoints/`, and the best evaluated state to
    `checkpoints_best/`, written with the next save (an evaluation never waits on a write).

    Args:
        graph: the run's graph.
        ckpt: the run's `checkpoints/`.
        best_dir: where the best evaluated state goes.
        wandb_run_id: the run's W&B run, kept in every checkpoint's meta (None: no tracking).
        say: prints a line above the progress display.
    """

    def __init__(self, graph: Graph, ckpt: Checkpointer, best_dir: Path, wandb_run_id: str | None,
                 say: Callable[[str], None]) -> None:
        self.g, self.ckpt, self.wandb_run_id, self.say = graph, ckpt, wandb_run_id, say
        self.best_ckpt = Checkpointer(best_dir, keep=1)
        self.best_pending: EvalResult | None = None  # a new best not yet written to checkpoints_best/

    def save(self, best_eval: float | None, signals: Signals, final: bool = False) -> None:
        """Writes the newest consistent learner state (labelled with the env-step count; `final`: the run's last,
        see `save_checkpoint`), then the best evaluated state if it improved since the last save; a second signal
        meanwhile is told what the run waits for."""
        snap = state_to_save(self.g, self.say)
        with signals.busy(f"saving the checkpoint of step {snap.env_steps}"), self.g.timers.span("checkpoint/save"):
            save_checkpoint(self.g, self.ckpt, snap, best_eval, final, self.wandb_run_id)
            self.save_best(best_eval)

    def offer_best(self, result: EvalResult) -> None:
        """`result` is the best evaluation so far: its state goes to `checkpoints_best/` with the next save."""
        self.best_pending = result

    def save_best(self, best_eval: float | None) -> None:
        """Writes the pending best evaluated state, if there is one."""
        best, self.best_pending = self.best_pending, None
        if best is not None:
            at = best.snapshot
            meta = checkpoint_meta(self.g, at.env_steps, at.updates, best_eval, best.stats, self.wandb_run_id)
            if not self.best_ckpt.save(at.env_steps, checkpoint_tree(self.g, at.state), meta.to_dict()):
                self.say(f"warning: best checkpoint of step {at.env_steps} not written: "
                         f"{self.best_ckpt.directory} holds a later step (from before a resume)")

    def close(self) -> None:
        self.best_ckpt.close()
