"""`python -m jaxrl_dist.plot EXP [EXP ...] [--metric M] [--x env_steps|wall_s] [--out FILE] [--timing]`: learning
curves.

Writes one PNG: a line per config, the mean over runs that share it (seeds), with a band from their minimum to
their maximum. See `jaxrl_dist.io.plots` for how runs are grouped and labelled.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_dist.plot", description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+", help="experiment directories, e.g. experiments/dqn_cartpole")
    p.add_argument("--metric", default="eval/episode_return", help="a metrics.jsonl key (default: eval/episode_return)")
    p.add_argument("--x", default="env_steps", help="x axis: env_steps (default) or wall_s")
    p.add_argument("--out", help="the PNG to write (default: <metric with / as _>.png in the working directory)")
    p.add_argument("--title", help="the plot's title (default: the metric)")
    p.add_argument("--timing", action="store_true",
                   help="end each label with its runs' env steps, wall time and env steps/s; a single run also gets "
                        "a top axis of wall-clock minutes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxrl_dist.errors import UserError
    from jaxrl_dist.io.plots import plot_experiments

    out = args.out or args.metric.replace("/", "_") + ".png"
    try:
        path = plot_experiments(args.experiments, out, args.metric, args.x, args.title,
                                warn=lambda msg: print(msg, file=sys.stderr, flush=True), timing=args.timing)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
