"""Policies rebuilt from a checkpoint's files alone: the config and env spec stored in its meta rebuild the
algorithm, and its arrays fill it. Export and offline evaluation start here; no object of the training run is used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxrl_dist.algos import Algorithm, make_algorithm
from jaxrl_dist.config import Config, build
from jaxrl_dist.envs import EnvSpec
from jaxrl_dist.errors import UserError
from jaxrl_dist.io.checkpoint import Checkpointer, CheckpointMeta
from jaxrl_dist.io.experiment import BEST_CHECKPOINT_DIR, CHECKPOINT_DIR


def checkpoint_target(algo: Algorithm, actors: int) -> dict[str, Any]:
    """The abstract structure of a checkpoint's arrays (no env, no computation): the restore target."""
    return {
        "learner": jax.eval_shape(algo.init, jax.random.PRNGKey(0)),
        "actor_keys": jax.ShapeDtypeStruct((actors, 2), jnp.uint32),
    }


def _restore(directory: Path, step: int | None) -> tuple[dict[str, Any], CheckpointMeta, Config, EnvSpec, Algorithm]:
    """A checkpoint's arrays and meta, with the config, env spec and algorithm rebuilt from the meta."""
    with Checkpointer(directory) as ckpt:
        step_dir = Path(directory) / str(step if step is not None else ckpt.latest_step())
        meta = CheckpointMeta.parse(ckpt.read_meta(step), step_dir)
        try:
            cfg, spec = build(meta.config), EnvSpec.from_dict(meta.env_spec)
        except UserError as err:
            raise UserError(f"checkpoint {step_dir} holds a config this jaxrl_dist cannot build: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(
                f"checkpoint {step_dir} is damaged: its env spec lacks or garbles {type(err).__name__}: {err}"
            ) from None
        algo = make_algorithm(spec, cfg)
        tree, _, _ = ckpt.restore(step, target=checkpoint_target(algo, meta.actors))
    return tree, meta, cfg, spec, algo


def load_checkpoint(directory: Path, step: int | None = None) -> tuple[dict[str, Any], CheckpointMeta]:
    """Reads a checkpoint from its files alone: `({"learner": state, "actor_keys": keys}, meta)`.

    Raises:
        UserError: No checkpoint (or no such step) in `directory`, or a damaged one; the message names it.
    """
    tree, meta, *_ = _restore(directory, step)
    return tree, meta


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """An inference-only policy and what describes it.

    Attributes:
        experiment: the experiment directory it came from.
        step: the checkpoint's step (env steps at save time).
        cfg: the run's config, as stored in the checkpoint.
        spec: the env spec stored in the checkpoint (observation shape/dtype, action space and bounds).
        algo: the algorithm rebuilt from `cfg` and `spec`; `algo.inference(params, obs)` is the policy.
        params: the actor parameters (`algo.actor_params` of the learner state), on the first local device.
        meta: the checkpoint's meta (counters, best eval return, format version).
        name: how outputs derived from it are named: the step, or `best-<step>` for the best checkpoint (whose step
            may equal that of a different, later state in `checkpoints/`).
    """

    experiment: Path
    step: int
    cfg: Config
    spec: EnvSpec
    algo: Algorithm
    params: Any
    meta: CheckpointMeta
    name: str = ""

    def __call__(self, obs: Any) -> dict[str, jax.Array]:
        """Runs the policy on a `[B, *obs_shape]` batch of raw observations (not jitted: for one-off use)."""
        return self.algo.inference(self.params, obs)


def parse_step(value: str | int | None) -> int | str | None:
    """A `--step` argument: an env-step count, `latest` (None) or `best`.

    Raises:
        UserError: Anything else.
    """
    if value is None or value == "latest":
        return None
    if value == "best":
        return "best"
    try:
        step = int(value)
    except (TypeError, ValueError):
        step = -1
    if step < 0:
        raise UserError(f"--step {value!r} is not allowed: use an env-step count (>= 0), 'latest' or 'best'")
    return step


def load_policy(experiment: str | Path, step: int | str | None = None) -> LoadedPolicy:
    """Rebuilds the inference-only policy of an experiment's checkpoint.

    Args:
        experiment: The experiment directory.
        step: An env-step count in `checkpoints/`, None (or "latest") for the latest one there, or "best" for the
            checkpoint of the best evaluation (`checkpoints_best/`).

    Raises:
        UserError: The experiment directory or its checkpoints are missing, `step` has no checkpoint (the message
            lists the available steps), or the checkpoint is damaged.
    """
    step = parse_step(step)
    exp = Path(experiment).expanduser().absolute()
    if not exp.is_dir():
        raise UserError(f"experiment directory {exp} does not exist")
    folder = BEST_CHECKPOINT_DIR if step == "best" else CHECKPOINT_DIR
    ckpt_dir = exp / folder
    if not ckpt_dir.is_dir():
        what = "best checkpoint (did the run evaluate?)" if step == "best" else "checkpoint (has the run saved one yet?)"
        raise UserError(f"no {what} in {exp}: it has no {folder}/ folder")
    tree, meta, cfg, spec, algo = _restore(ckpt_dir, None if step == "best" else step)  # type: ignore[arg-type]
    saved_step = meta.env_steps
    name = f"best-{saved_step}" if step == "best" else str(saved_step)
    return LoadedPolicy(exp, saved_step, cfg, spec, algo, algo.actor_params(tree["learner"]), meta, name)
