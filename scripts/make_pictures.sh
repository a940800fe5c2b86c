#!/usr/bin/env bash
# Regenerates the pictures of README.md and docs/ with the project's own tools:
#
#   docs/curves/{dqn_cartpole,ppo_cartpole,sac_pendulum}.png  learning curves of the shipped configs, 3 seeds each,
#                      trained to their budget without early stopping (python -m jaxrl_dist.plot --timing)
#   docs/cartpole.gif  one evaluation episode of the best checkpoint of dqn_cartpole seed 0 (evaluate --video)
#   docs/scaling.png   python -m jaxrl_dist.bench scaling --json (kept as docs/scaling.json), drawn by
#                      scripts/pictures.py
#   docs/dataflow.png  scripts/draw_dataflow.py
#
# Usage, from anywhere: scripts/make_pictures.sh [curves] [gif] [scaling] [dataflow]   (no argument: all four;
# gif needs the dqn_cartpole runs of `curves`). About 10 minutes on 2 CPU cores. The runs go to $PICS_ROOT (default
# /tmp/jaxrl_pics), never to experiments/; everything heavy runs under `nice -n 10`. docs/curves/sac_halfcheetah*.png,
# ddqn_catch.png and ppo_catch.png are longer runs (hours, minutes) made by hand: see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ROOT=${PICS_ROOT:-/tmp/jaxrl_pics}
SEEDS=(0 1 2)
CURVES=(dqn_cartpole ppo_cartpole sac_pendulum)
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
  # 8 fake CPU devices (on a machine without 8 devices) and 1 or 2 MPI groups, one median-free run each.
  nice -n 10 "$PYTHON" -m jaxrl_dist.bench scaling --devices 1,2,4,8 --groups 1,2 --sync grads,params \
    --group-steps 30000 --repeats 1 --json | tail -n 1 >"$ROOT/scaling.json"
  cp "$ROOT/scaling.json" docs/scaling.json
  "$PYTHON" scripts/pictures.py scaling docs/scaling.json docs/scaling.png
}

dataflow() {
  "$PYTHON" scripts/draw_dataflow.py
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(curves gif scaling dataflow)
for step in "${steps[@]}"; do
  case $step in
    curves|gif|scaling|dataflow) echo "== $step"; "$step" ;;
    *) echo "error: unknown step '$step' (allowed: curves gif scaling dataflow)" >&2; exit 2 ;;
  esac
done
ls -l docs/curves/*.png docs/*.png docs/*.gif 2>/dev/null || true
