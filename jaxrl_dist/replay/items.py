"""The shapes of what the replay stores and returns, from an env spec alone (nothing allocated but zeros)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_dist.envs.spec import EnvSpec
from jaxrl_dist.records import PrioritizedBatch, Transition


def action_dtype(spec: EnvSpec) -> type:
    """The dtype actions are stored in: int32 for discrete and multi-discrete, float32 for continuous."""
    return np.int32 if spec.action_kind in ("discrete", "multi_discrete") else np.float32


def transition_example(spec: EnvSpec) -> Transition:
    """One transition of zeros: the shapes and dtypes the replay stores."""
    obs = np.zeros(spec.obs_shape, spec.obs_dtype)
    return Transition(obs, np.zeros(spec.action_shape, action_dtype(spec)), np.float32(0), np.float32(0), obs)


def sample_example(spec: EnvSpec, prioritized: bool) -> Transition | PrioritizedBatch:
    """One sampled item of zeros as the learner gets it (with `weight` and `index` when prioritized)."""
    t = transition_example(spec)
    return PrioritizedBatch(*t, np.float32(1), np.zeros(2, np.int32)) if prioritized else t


def zero_samples(spec: EnvSpec, prioritized: bool, lead: tuple[int, ...]) -> Any:
    """Zeros shaped like sampled batches with leading axes `lead` (e.g. `(K, B)`)."""
    example = sample_example(spec, prioritized)
    return type(example)(*(np.zeros((*lead, *np.shape(x)), np.asarray(x).dtype) for x in example))
