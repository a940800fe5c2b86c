"""Run an exported jaxrl_dist policy with onnxruntime and numpy only: no JAX, no jaxrl_dist.

    python examples/onnx_policy.py experiments/dqn_cartpole/export/<step>/policy.onnx --env CartPole-v1 --episodes 5

The model's metadata (`metadata_props["jaxrl_dist"]`) names its input and outputs; the env is gymnasium's.
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="path to policy.onnx")
    parser.add_argument("--env", default=None, help="gymnasium env id (default: the env the policy was trained on)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["jaxrl_dist"])
    obs_info = meta["inputs"][0]
    env = gym.make(args.env or meta["env_id"])
    returns = []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + episode)
        total, done = 0.0, False
        while not done:
            batch = np.asarray(obs, dtype=obs_info["dtype"])[None]  # the model takes a batch: [1, *obs_shape]
            action = session.run(["action"], {obs_info["name"]: batch})[0][0]
            obs, reward, terminated, truncated, _ = env.step(action.item())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        print(f"episode {episode}: return {total:.1f}")
    print(f"mean return over {len(returns)} episodes: {np.mean(returns):.1f}")


if __name__ == "__main__":
    main()
