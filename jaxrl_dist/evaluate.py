"""`python -m jaxrl_dist.evaluate --experiment DIR [--step N|best] [--episodes K] [--video]`: offline evaluation.

Rebuilds the greedy policy of a saved checkpoint from its files alone and runs it exactly as the run's evaluator
does: `--episodes` envs side by side, env i seeded `eval seed + i`. With the run's episode count and seed (the
defaults) it reproduces the returns the run logged for that checkpoint. Rebuilding it imports the modules its
config names (a custom env, wrapper, torso or algorithm): they are named first, since their code runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

START_TIME = time.time()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_dist.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True, help="the experiment directory, e.g. experiments/dqn_cartpole")
    p.add_argument("--step", default="latest",
                   help="checkpoint to evaluate: an env-step count, 'latest' (default) or 'best' (checkpoints_best/)")
    p.add_argument("--episodes", default=None, help="episodes, run side by side (default: the run's eval.episodes)")
    p.add_argument("--env-seed", default=None, help="seed of env 0 (default: the run's evaluation seed)")
    p.add_argument("--video", action="store_true", help="record env 0's episode under <experiment>/videos/")
    p.add_argument("--device", default="auto", help="JAX device for inference: auto, cpu, cpu:N, gpu:N")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def _int_arg(flag: str, value: str | None, minimum: int) -> int | None:
    """An integer flag value, or None if not given; UserError naming the flag otherwise."""
    from jaxrl_dist.errors import UserError

    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise UserError(f"{flag} {value!r} is not allowed; allowed: an integer >= {minimum}")
    return number


def load(experiment: str | Path, step: str, log: Any = None) -> Any:
    """The `LoadedPolicy` of checkpoint `step` ('latest', 'best' or an env-step count) of an experiment; with `log`,
    the modules its config makes this process import are named first.

    Raises:
        UserError: No such experiment, checkpoint or step; a damaged checkpoint.
    """
    from jaxrl_dist.io.policy import load_policy

    if log is not None:
        announce_imports(experiment, step, log)
    return load_policy(experiment, step)


def announce_imports(experiment: str | Path, step: str, log: Any) -> None:
    """Says which modules loading checkpoint `step` imports beyond jaxrl_dist's own (the custom env, wrappers,
    torso and algorithm its config names as `package.module:Name`): their code runs in this process."""
    from jaxrl_dist.io.checkpoint import Checkpointer, CheckpointMeta
    from jaxrl_dist.io.experiment import BEST_CHECKPOINT_DIR, CHECKPOINT_DIR
    from jaxrl_dist.io.policy import parse_step

    which = parse_step(step)
    folder = Path(experiment).expanduser().absolute() / (BEST_CHECKPOINT_DIR if which == "best" else CHECKPOINT_DIR)
    if not folder.is_dir():
        return  # loading says what is missing
    with Checkpointer(folder) as ckpt:
        meta = CheckpointMeta.parse(ckpt.read_meta(which if isinstance(which, int) else None), folder)
    if meta.imports():
        log(f"checkpoint config imports {', '.join(meta.imports())}")


def evaluate(policy: Any, episodes: int | None = None, env_seed: int | None = None, video: bool = False,
             device: str = "auto", log: Any = print) -> dict[str, Any]:
    """Runs the run's evaluation on a loaded policy; returns its stats, with `step`, `episodes`, `env_seed`, `video`.

    Raises:
        UserError: The device does not exist, or the env cannot be built here.
    """
    from jaxrl_dist.config import eval_seed
    from jaxrl_dist.config.plan import eval_threads
    from jaxrl_dist.io.video import recorder
    from jaxrl_dist.roles.graph import attach_video, configure_runtime, make_evaluator
    from jaxrl_dist.io.experiment import VIDEO_DIR

    configure_runtime()
    cfg = policy.cfg
    episodes = episodes or cfg.eval.episodes
    seed = eval_seed(cfg) if env_seed is None else env_seed
    evaluator = make_evaluator(cfg, policy.spec, policy.algo, episodes, seed, device=device,
                               threads=eval_threads(cfg, episodes=episodes))
    if video:
        start = recorder(policy.experiment / VIDEO_DIR, cfg.eval.video_fps, prefix="offline_")
        attach_video(evaluator, cfg, seed, start, log)
    log(f"evaluating step {policy.step} of {policy.experiment}: {episodes} episodes of {cfg.env.id} (env seed {seed})")
    out = evaluator.run(policy.params, video_step=policy.step if video else None)
    assert out is not None  # it has no stop event, so it runs to the end
    stats, path = out
    return {"step": policy.step, "episodes": episodes, "env_seed": seed, **stats,
            "video": str(path) if path is not None else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxrl_dist.errors import UserError

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else print
    try:
        episodes = _int_arg("--episodes", args.episodes, 1)
        env_seed = _int_arg("--env-seed", args.env_seed, 0)
        policy = load(args.experiment, args.step, log)
        result = evaluate(policy, episodes, env_seed, args.video, args.device, log)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    r = result
    print(f"step {r['step']}: return {r['eval/episode_return']:.2f} +- {r['eval/episode_return_std']:.2f} "
          f"[{r['eval/episode_return_min']:g}, {r['eval/episode_return_max']:g}], length "
          f"{r['eval/episode_length']:.1f} over {r['episodes']} episodes", flush=True)
    if r["video"]:
        print(f"video: {r['video']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
