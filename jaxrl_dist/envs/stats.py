"""Episode returns and lengths from a stream of `StepBatch`es, correct across async batches.

Running sums are kept per env id, so batches may arrive in any order and contain any subset of envs (EnvPool's async
mode). Each update is a handful of vectorized numpy ops over the batch; Python only touches finished episodes.
"""

from __future__ import annotations

import numpy as np

from jaxrl_dist.envs.spec import StepBatch


class EpisodeStats:
    """Accumulates the undiscounted return and the length of every env's current episode.

    A `first` row starts a new episode: its reward (always 0 from a reset) is not counted and the length restarts
    at 0. Every later row of the env adds its reward and one step. A row with `terminated` or `truncated` ends the
    episode and reports it, so an episode of k steps has length k.

    Args:
        num_envs: number of env ids (ids are 0..num_envs-1).
    """

    def __init__(self, num_envs: int) -> None:
        # float64 accumulators: long episodes of small rewards would lose precision in float32.
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int32)

    def update(self, batch: StepBatch) -> tuple[np.ndarray, np.ndarray]:
        """Adds one batch; returns the episodes that ended in it.

        Args:
            batch: a StepBatch whose env ids are distinct (true of every VecEnv batch).

        Returns:
            (returns float32 [k], lengths int32 [k]) of the k episodes that ended in this batch, in batch order.
        """
        ids = batch.env_ids
        first = batch.first
        returns = np.where(first, 0.0, self._returns[ids] + batch.reward)
        lengths = np.where(first, 0, self._lengths[ids] + 1).astype(np.int32)
        self._returns[ids] = returns
        self._lengths[ids] = lengths
        ended = batch.terminated | batch.truncated
        return returns[ended].astype(np.float32), lengths[ended]

    def reset(self) -> None:
        """Forgets all running episodes (e.g. after `VecEnv.reset`; `first` rows would restart them anyway)."""
        self._returns[:] = 0.0
        self._lengths[:] = 0
