"""n-step transitions from per-env steps, on the host, vectorized over the envs of one batch."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from jaxrl_dist.records import Transition


class NStepWriter:
    """Keeps the last `n` steps of every env and emits n-step transitions (Sutton & Barto, ch. 7).

    A window of n steps becomes `(obs_t, action_t, sum_k gamma^k r_{t+k}, gamma^n, obs_{t+n})`. When an episode
    ends, every pending window is emitted with the steps it has: a termination gives discount 0, a truncation keeps
    gamma^k so the learner bootstraps from the final observation (Pardo et al. 2018, "Time limits in RL").

    Args:
        num_envs: envs of the actor (env ids are 0..num_envs-1).
        n: steps per transition.
        gamma: discount.
        obs_shape, obs_dtype, action_shape, action_dtype: one step's observation and action.
    """

    def __init__(
        self,
        num_envs: int,
        n: int,
        gamma: float,
        obs_shape: tuple[int, ...],
        obs_dtype: npt.DTypeLike,
        action_shape: tuple[int, ...] = (),
        action_dtype: npt.DTypeLike = np.int32,
    ) -> None:
        self.n, self.gamma = n, np.float32(gamma)
        self.powers = gamma ** np.arange(n + 1, dtype=np.float64)
        if n > 1:
            self.obs = np.zeros((num_envs, n, *obs_shape), obs_dtype)
            self.act = np.zeros((num_envs, n, *action_shape), action_dtype)
            self.rew = np.zeros((num_envs, n), np.float64)
            self.start = np.zeros(num_envs, np.int64)  # ring index of the oldest pending step
            self.count = np.zeros(num_envs, np.int64)  # pending steps, < n between calls

    def reset(self) -> None:
        """Forgets pending steps (after the envs were reset from outside, e.g. on resume)."""
        if self.n > 1:
            self.count[:] = 0
            self.start[:] = 0

    def step(
        self,
        env_ids: np.ndarray,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> Transition | None:
        """Adds one step of each env in `env_ids` (each id at most once); returns the transitions completed.

        Args:
            env_ids: `[K]` int env ids.
            obs, action: `[K, ...]` observation the action was taken in, and the action.
            reward: `[K]` reward of the step.
            next_obs: `[K, ...]` observation after the step (the final one where the episode ended).
            terminated, truncated: `[K]` bool episode-end flags of the step.

        Returns:
            A `Transition` of numpy arrays with a leading batch axis, or None when no window completed.
        """
        if self.n == 1:
            discount = np.where(terminated, np.float32(0.0), self.gamma).astype(np.float32)
            return Transition(obs, action, reward.astype(np.float32, copy=False), discount, next_obs)
        n = self.n
        pos = (self.start[env_ids] + self.count[env_ids]) % n
        self.obs[env_ids, pos] = obs
        self.act[env_ids, pos] = action
        self.rew[env_ids, pos] = reward
        self.count[env_ids] += 1
        ended = terminated | truncated
        parts: list[Transition] = []
        full_mask = (self.count[env_ids] == n) & ~ended
        full = env_ids[full_mask]
        if full.size:
            no_end = np.zeros(full.shape, bool)
            parts.append(self._window(full, np.zeros_like(full), np.full(full.shape, n), next_obs[full_mask], no_end))
            self.start[full] = (self.start[full] + 1) % n
            self.count[full] = n - 1
        for j in np.flatnonzero(ended):  # once per episode: a Python loop is cheap here
            env = env_ids[j]
            c = int(self.count[env])
            ids = np.full(c, env)
            offsets = np.arange(c)
            final = np.repeat(next_obs[j : j + 1], c, 0)
            parts.append(self._window(ids, offsets, c - offsets, final, np.full(c, terminated[j])))
            self.count[env] = 0
            self.start[env] = 0
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return Transition(*(np.concatenate(f) for f in zip(*parts)))

    def _window(
        self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, next_obs: np.ndarray, terminal: np.ndarray
    ) -> Transition:
        """Transitions starting `offsets` steps after each env's oldest pending step and spanning `lengths` steps."""
        n = self.n
        first = (self.start[ids] + offsets) % n
        k = np.arange(n)
        slots = (first[:, None] + k[None, :]) % n  # [M, n] ring slots of the window's steps
        valid = k[None, :] < lengths[:, None]
        rewards = np.where(valid, self.rew[ids[:, None], slots], 0.0)
        returns = (rewards * self.powers[:n][None, :]).sum(axis=1)
        discount = np.where(terminal, 0.0, self.powers[lengths])
        return Transition(
            self.obs[ids, first],
            self.act[ids, first],
            returns.astype(np.float32),
            discount.astype(np.float32),
            next_obs,
        )
