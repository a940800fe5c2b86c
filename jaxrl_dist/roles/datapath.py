"""How experience travels from the actors to the learner: the data path, one object per run, chosen by the
algorithm's definition (`AlgorithmDef.data`, carried by the plan as `Plan.data`).

A data path gives the graph builder everything that differs between off-policy and on-policy learning:

- a writer per actor (`Writer`): the only thing the actor talks to after acting, and the rule for which
  parameters it may act with;
- the limiter that paces actors and the learner (`jaxrl_dist.roles.sync`);
- the learner's feed (`queue`, a `BatchQueue` of batches already on the learner devices), the role threads that
  fill it, and the serial twin of those threads (`next_batch`);
- what a checkpoint keeps of it.

`ReplayPath` (`jaxrl_dist.roles.replay_path`) and `SegmentPath` (`jaxrl_dist.roles.segments`) are the two today; a
new one (a device-resident replay, say) is one more class with these methods and an entry in `PATHS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from jaxrl_dist.algos.base import Algorithm
    from jaxrl_dist.config import Config, Plan
    from jaxrl_dist.distributed.mesh import LearnerMesh
    from jaxrl_dist.envs import EnvSpec, StepBatch, VecEnv
    from jaxrl_dist.records import PriorityFeedback
    from jaxrl_dist.roles.lifetime import Lifetime, Timers
    from jaxrl_dist.roles.sampler import BatchQueue
    from jaxrl_dist.roles.sync import Counters, Limiter, ParamStore


class PathInputs(NamedTuple):
    """What a data path is built from.

    Attributes:
        cfg: the config.
        plan: the run's plan (this process's share).
        spec: the env spec.
        algo: the algorithm (its `act` gives the shapes of what on-policy segments record).
        placement: the learner devices.
        counters: where the run starts.
        lifetime: the run's lifetime (stop flag, errors).
        timers: per-stage timers.
        rank: this process's rank among MPI groups or `jax.distributed` processes; None for a lone process.
    """

    cfg: Config
    plan: Plan
    spec: EnvSpec
    algo: Algorithm
    placement: LearnerMesh
    counters: Counters
    lifetime: Lifetime
    timers: Timers
    rank: int | None


class Writer(Protocol):
    """One actor's side of a data path. Per env round the actor calls `refresh` (before acting), then `action` and
    `write` with what its policy returned (after sending the actions, so the write overlaps the env step)."""

    def refresh(self, take: Callable[[], int], timeout: float) -> bool:
        """Makes the actor use parameters the path allows: `take()` takes the store's newest and returns their
        version. False when a wait timed out (the actor retries while the run goes on)."""
        ...

    def action(self, out: Any) -> np.ndarray:
        """The env actions in what `act` returned (host arrays)."""
        ...

    def write(self, batch: StepBatch, out: Any, timers: Timers) -> None:
        """Records one env round: the batch `recv` gave and what `act` returned for it (host arrays)."""
        ...


class DataPath(Protocol):
    """The data path of one process (see the module docstring)."""

    limiter: Limiter
    queue: BatchQueue
    feedback: Callable[[PriorityFeedback], None] | None  # where the learner hands priorities (prioritized replay)

    def writer(self, index: int, env: VecEnv, store: ParamStore) -> Writer:
        """The writer of actor `index`, which steps `env`."""
        ...

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        """The path's own role threads (name, loop), started with the actors in async mode."""
        ...

    def next_batch(self) -> Any:
        """Serial mode: the learner's next batch, made inline."""
        ...

    def ready(self) -> bool:
        """Whether the learner has data."""
        ...

    def warmup_batches(self) -> Any:
        """Zeros shaped like one learner call's data, on the learner devices (to compile before data arrives)."""
        ...

    def target_updates(self, counters: Counters) -> int:
        """The updates the learner makes in all (MPI groups and multi-process meshes enter every call together)."""
        ...

    def size(self) -> int:
        """Items held (replay transitions, or segments waiting)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint with `checkpoint.save_replay` keeps."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def rng_state(self) -> dict[str, Any] | None:
        """The state of the path's own random generator, if it has one (saved in checkpoints)."""
        ...

    def set_rng_state(self, state: dict[str, Any]) -> None: ...


# Data paths by the name an `AlgorithmDef.data` gives (module:class, imported when a run is built).
PATHS = {"replay": "jaxrl_dist.roles.replay_path:ReplayPath", "segments": "jaxrl_dist.roles.segments:SegmentPath"}


def make_path(inputs: PathInputs) -> DataPath:
    """The data path `inputs.plan.data` names."""
    module, _, name = PATHS[inputs.plan.data].partition(":")
    return getattr(importlib.import_module(module), name)(inputs)
