"""Evaluation: full episodes with the greedy / deterministic policy on env instances of its own."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from jaxrl_dist.algos.base import Algorithm
from jaxrl_dist.envs import VecEnv


class Evaluator:
    """Runs one episode in each of its envs (run side by side) and reports the returns.

    Args:
        env: a synchronous vectorized env with one env per episode to evaluate.
        algo: the algorithm (its `eval_act` is used).
        device: where inference runs.
        max_steps: safety bound on the steps of one evaluation.
    """

    def __init__(self, env: VecEnv, algo: Algorithm, device: jax.Device, max_steps: int = 1_000_000) -> None:
        self.env, self.device, self.max_steps = env, device, max_steps
        self._act = jax.jit(algo.eval_act)

    def warmup(self, params: Any) -> None:
        """Compiles the evaluation policy ahead of the first evaluation."""
        spec = self.env.spec
        obs = np.zeros((self.env.num_envs, *spec.obs_shape), spec.obs_dtype)
        jax.block_until_ready(self._act(jax.device_put(params, self.device), obs))

    def run(self, params: Any, timeout: float = 600.0) -> dict[str, float]:
        """Evaluates `params`; returns `eval/episode_return` and `eval/episode_length` mean, std, min and max."""
        env, n = self.env, self.env.num_envs
        params = jax.device_put(params, self.device)
        returns, lengths = np.zeros(n, np.float64), np.zeros(n, np.int64)
        done = np.zeros(n, bool)
        deadline = time.monotonic() + timeout
        env.reset()
        for _ in range(self.max_steps):
            batch = env.recv(timeout=max(1.0, deadline - time.monotonic()))
            ids = batch.env_ids
            live = ~done[ids] & ~batch.first
            returns[ids[live]] += batch.reward[live]
            lengths[ids[live]] += 1
            done[ids[live & (batch.terminated | batch.truncated)]] = True
            if done.all():
                break  # the last recv is not followed by a send, so the env can be reset for the next evaluation
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation did not finish {n} episodes within {timeout:.0f} s")
            env.send(np.asarray(self._act(params, batch.obs)), ids)
        return {
            **_summary("eval/episode_return", returns),
            **_summary("eval/episode_length", lengths.astype(np.float64)),
        }


def _summary(name: str, values: np.ndarray) -> dict[str, float]:
    return {
        name: float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
    }
