"""`python -m jaxrl_dist.export --experiment DIR [--step N|latest|best] --format onnx|savedmodel|all [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jaxrl_dist.export",
        description="Export a trained policy from a checkpoint to ONNX and/or a TensorFlow SavedModel.",
    )
    p.add_argument("--experiment", required=True, help="experiment directory, e.g. experiments/dqn_cartpole")
    p.add_argument("--step", default="latest",
                   help="checkpoint: an env-step count, 'latest' (default) or 'best' (the best evaluation's)")
    p.add_argument("--format", default="onnx", help="onnx, savedmodel, all, or a comma-separated list (default onnx)")
    p.add_argument("--out", type=Path, help="output folder (default: <experiment>/export/<step>/)")
    p.add_argument("--samples", type=int, default=1000,
                   help="random observations for the parity check against the JAX policy (0 skips it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxrl_dist.errors import UserError
    from jaxrl_dist.evaluate import load
    from jaxrl_dist.export import export_policy, parse_formats, require

    start = time.monotonic()
    try:
        if args.samples < 0:
            raise UserError(f"--samples {args.samples} is not allowed: use 0 (no check) or more")
        formats = parse_formats(args.format)
        require(formats)  # a missing runtime fails before the checkpoint is read
        policy = load(args.experiment, args.step, log=lambda line: print(line, flush=True))  # names what it imports
        print(f"checkpoint {policy.step} of {policy.experiment} ({policy.cfg.algo.name}, {policy.cfg.env.id})",
              flush=True)
        results = export_policy(policy, formats, args.out, samples=args.samples,
                                log=lambda line: print(line, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; no export file was replaced", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a converter crash: traceback, non-zero exit
        traceback.print_exc()
        return 1
    print(f"exported {len(results)} format(s) to {results[0].path.parent} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
