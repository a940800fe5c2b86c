"""`python -m jaxrl_dist.bench {throughput,solve,scaling,replay,cnn,gpu,faults} ... [--json]`: prints a table, or
one JSON object with --json."""

from __future__ import annotations

import argparse
import json
import sys

from jaxrl_dist.bench import cnn, faults, gpu, replay, scaling, solve, throughput

COMMANDS = {"throughput": throughput, "solve": solve, "scaling": scaling, "replay": replay, "cnn": cnn,
            "gpu": gpu, "faults": faults}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxrl_dist.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    from jaxrl_dist.errors import UserError

    try:
        result = COMMANDS[args.command].run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result) if args.json else COMMANDS[args.command].render(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
