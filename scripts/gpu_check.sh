#!/usr/bin/env bash
# The accelerator check: on a fresh GPU machine, after the GPU install of docs/gpu.md
#   pip install -e ".[cuda12]"
# prints one JSON object (raw EnvPool Pong steps/s, the actor pipeline with the policy on the GPU and on the CPU,
# ppo_pong and ddqn_pong training throughput, the sampler's calls/s for Atari batches, the learner's updates/s at
# B = 256) in about 8 minutes. Progress lines go to stdout before it; the JSON is the last line.
# `scripts/gpu_check.sh --quick` checks the script itself on any machine in about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())'
exec python -m jaxrl_dist.bench gpu --json "$@"
