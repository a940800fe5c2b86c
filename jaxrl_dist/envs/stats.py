"""Episode returns and lengths from a stream of `StepBatch`es, correct across async batches.

An episode here is a whole game (`StepBatch.game_over` ends it) and its return is the game's own score
(`StepBatch.score`), so training statistics stay comparable with published scores when the learner sees clipped
rewards and lost lives as episode ends (EnvPool Atari with `reward_clip`, `episodic_life`).

Running sums are kept per env id, so batches may arrive in any order and contain any subset of envs (EnvPool's async
mode). Each update is a handful of vectorized numpy ops over the batch; Python only touches finished games.
"""

from __future__ import annotations

import numpy as np

from jaxrl_dist.envs.spec import StepBatch


class EpisodeStats:
    """Accumulates the undiscounted score and the length of every env's current game.

    Every row adds its `score` (0 in `first` rows, which are resets, not steps) and, unless `first`, one step. A
    `game_over` row reports the game and restarts the env's sums, so a game of k steps has length k, counted across
    its lives; the `first` row of a new life continues the game.

    Args:
        num_envs: number of env ids (ids are 0..num_envs-1).
    """

    def __init__(self, num_envs: int) -> None:
        # float64 accumulators: long episodes of small rewards would lose precision in float32.
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int32)

    def update(self, batch: StepBatch) -> tuple[np.ndarray, np.ndarray]:
        """Adds one batch; returns the games that ended in it.

        Args:
            batch: a StepBatch whose env ids are distinct (true of every VecEnv batch).

        Returns:
            (returns float32 [k], lengths int32 [k]) of the k games that ended in this batch, in batch order.
        """
        ids = batch.env_ids
        returns = self._returns[ids] + batch.score
        lengths = self._lengths[ids] + np.logical_not(batch.first)
        ended = batch.game_over
        self._returns[ids] = np.where(ended, 0.0, returns)
        self._lengths[ids] = np.where(ended, 0, lengths)
        return returns[ended].astype(np.float32), lengths[ended].astype(np.int32)

    def reset(self) -> None:
        """Forgets all running games; call it after `VecEnv.reset`, which abandons them."""
        self._returns[:] = 0.0
        self._lengths[:] = 0
