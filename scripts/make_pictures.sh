#!/usr/bin/env bash
# Regenerates the pictures of README.md and docs/ with the project's own tools:
#
#   docs/curves/{dqn_cartpole,ppo_cartpole,sac_pendulum}.png  learning curves of the shipped configs, 3 seeds each,
#                      trained to their budget without early stopping (python -m jaxrl_dist.plot --timing)
#   docs/cartpole.gif  one evaluation episode of the best checkpoint of dqn_cartpole seed 0 (evaluate --video)
#   docs/scaling.png   two runs of python -m jaxrl_dist.bench scaling --json (kept, with what each set, as
#                      docs/scaling.json), drawn by scripts/pictures.py
#   docs/dataflow.png  scripts/draw_dataflow.py
#
# Usage, from anywhere: scripts/make_pictures.sh [curves] [gif] [scaling] [dataflow] [catch] [halfcheetah]
# No argument: the first four, about 15 minutes on 2 CPU cores (gif needs the dqn_cartpole runs of `curves`;
# CURVES="sac_pendulum" remakes one config's curves). The longer runs are steps of their own: `catch`
# (docs/curves/ddqn_catch.png and ppo_catch.png, seed 0 each, about 11 minutes) and `halfcheetah`
# (docs/curves/sac_halfcheetah.png, 300k env steps, about 2 hours; sac_halfcheetah_lrs.png adds a run with
# `--set algo.critic_lr=1e-3 --set algo.alpha_lr=1e-3 --set train.learning_starts=5000`, see docs/benchmarks.md).
# The runs go to $PICS_ROOT (default /tmp/jaxrl_pics), never to experiments/; training runs under `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ROOT=${PICS_ROOT:-/tmp/jaxrl_pics}
SEEDS=(0 1 2)
read -r -a CURVES <<<"${CURVES:-dqn_cartpole ppo_cartpole sac_pendulum}"  # CURVES="sac_pendulum": only that one
mkdir -p "$ROOT" docs/curves

curves() {
  for cfg in "${CURVES[@]}"; do
    runs=()
    for seed in "${SEEDS[@]}"; do
      # The config by its shipped name; the experiment is then named <config>_seed<N> under log.root.
      nice -n 10 "$PYTHON" -m jaxrl_dist.train --config "$cfg" --seed "$seed" --overwrite --quiet \
        --set log.root="$ROOT/$cfg" --set eval.target_return=null >"$ROOT/$cfg-$seed.log"
      tail -n 1 "$ROOT/$cfg-$seed.log"
      runs+=("$ROOT/$cfg/${cfg}_seed$seed")
    done
    "$PYTHON" -m jaxrl_dist.plot "${runs[@]}" --timing --out "docs/curves/$cfg.png" \
      --title "$cfg: ${#SEEDS[@]} seeds, to the budget (no early stop)"
  done
}

gif() {
  local exp="$ROOT/dqn_cartpole/dqn_cartpole_seed0"
  local video
  video=$(nice -n 10 "$PYTHON" -m jaxrl_dist.evaluate --experiment "$exp" --step best --episodes 1 --video --json |
    "$PYTHON" -c 'import json, sys; r = json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["video"])')
  "$PYTHON" scripts/pictures.py gif "$video" docs/cartpole.gif
}

scaling() {
  # 8 fake CPU devices (on a machine without 8 devices) and 1 or 2 MPI groups, one run of each figure: the default
  # sync settings (averages every 64 updates, 8 updates per learner call), then overlapped averages every 1,024
  # updates with 32 updates per call (the fastest setting in docs/benchmarks.md). About 4 minutes.
  bench() { nice -n 10 "$PYTHON" -m jaxrl_dist.bench scaling --json --groups 1,2 --group-steps 30000 --repeats 1 "$@" |
    tail -n 1; }
  bench --devices 1,2,4,8 --sync grads,params >"$ROOT/scaling_default.json"
  bench --devices 1 --sync params --set roles.groups.overlap=true --set roles.groups.interval=1024 \
    --set roles.learner.updates_per_call=32 >"$ROOT/scaling_overlap.json"
  "$PYTHON" scripts/pictures.py scaling docs/scaling.png "$ROOT/scaling_default.json=every 64" \
    "$ROOT/scaling_overlap.json=overlap, every 1,024" --keep docs/scaling.json
}

dataflow() {
  "$PYTHON" scripts/draw_dataflow.py
}

one_seed() {  # config, title, extra train flags...: seed 0 to the config's budget, one curve with a wall-clock axis
  local cfg=$1 title=$2
  nice -n 10 "$PYTHON" -m jaxrl_dist.train --config "$cfg" --seed 0 --overwrite --quiet --set log.root="$ROOT/$cfg" \
    --set eval.target_return=null "${@:3}" | tail -n 1
  "$PYTHON" -m jaxrl_dist.plot "$ROOT/$cfg/${cfg}_seed0" --timing --title "$title" --out "docs/curves/$cfg.png"
}

catch() {
  one_seed ddqn_catch "Double DQN on Catch (configs/ddqn_catch.yaml, seed 0, no early stop)"
  one_seed ppo_catch "PPO on Catch (configs/ppo_catch.yaml, seed 0, no early stop)"
}

halfcheetah() {
  one_seed sac_halfcheetah "SAC on HalfCheetah-v4 (configs/sac_halfcheetah.yaml, seed 0, first 300k env steps)" \
    --set train.total_env_steps=300000
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(curves gif scaling dataflow)
for step in "${steps[@]}"; do
  case $step in
    curves|gif|scaling|dataflow|catch|halfcheetah) echo "== $step"; "$step" ;;
    *) echo "error: unknown step '$step' (allowed: curves gif scaling dataflow catch halfcheetah)" >&2; exit 2 ;;
  esac
done
ls -l docs/curves/*.png docs/*.png docs/*.gif 2>/dev/null || true
