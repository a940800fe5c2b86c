"""`python -m jaxrl_dist.launch slurm --config FILE --exp-name NAME [--seeds 0-4] [--sweep KEY=V1,V2 ...] ...`.

Expands seeds x sweep values into one Slurm job array, checks every combination's config before anything is
written, saves the sbatch script and a manifest in `<log.root>/NAME/slurm/`, and submits the script with
`sbatch --parsable` (or prints it with `--dry-run`). See `jaxrl_dist.slurm.script` for what a task does and
slurm/README.md for the templates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from jaxrl_dist.errors import UserError
from jaxrl_dist.slurm.script import MANIFEST_FILE, SCRIPT_FILE, JobSpec, check_line, manifest, render
from jaxrl_dist.slurm.sweep import check_sweeps, expand, parse_seeds, parse_sweep

SBATCH_TIMEOUT_S = 60.0
MPI_TYPES = ("pmi2", "pmix")  # srun --mpi= values that start MPI ranks; `srun --mpi=list` shows a cluster's
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}")  # Slurm's forms: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_FLAGS = {"sets": "--set"}  # argparse destinations that are not their flag's name


class LaunchError(UserError):
    """A launch option that is invalid, or a submission that Slurm refused."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_dist.launch", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="backend", required=True, metavar="slurm")
    s = sub.add_parser("slurm", help="submit a seeds x sweep job array to Slurm")
    s.add_argument("--config", required=True, help="YAML or Python config file")
    s.add_argument("--exp-name", help="experiment directory under log.root (default: the config's file name)")
    s.add_argument("--seeds", help="seeds to run, e.g. 0-4 or 0,3,7 (default: the config's train.seed)")
    s.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="config key and its values, e.g. algo.lr=1e-3,3e-4 (repeatable: the product is run)")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every task (repeatable)")
    s.add_argument("--nodes", type=_positive, help="nodes per task (sbatch --nodes); without --groups, one "
                   "jax.distributed process per node (or --processes) trains one learner mesh")
    s.add_argument("--groups", type=_positive, help="groups per task: srun starts one process per group")
    s.add_argument("--processes", type=_positive, help="jax.distributed processes per task (default: --nodes), "
                   "started by srun, one learner mesh over all of them (train --distributed)")
    s.add_argument("--gpus-per-node", type=_positive, help="GPUs per node (sbatch --gpus-per-node)")
    s.add_argument("--partition", help="Slurm partition")
    s.add_argument("--time", help="time limit per task, e.g. 04:00:00 or 1-00:00:00")
    s.add_argument("--mpi", choices=MPI_TYPES, default="pmi2",
                   help="srun --mpi= for --groups: pmi2 (the pip MPICH of the mpi extra, default) or pmix")
    s.add_argument("--signal-margin", type=_positive, default=180, metavar="SECONDS",
                   help="send SIGUSR1 this long before the time limit: checkpoint and requeue (default 180)")
    s.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                   help="an extra sbatch option, one argument, e.g. --sbatch-arg=--cpus-per-task=8 (repeatable)")
    s.add_argument("--python", default=sys.executable, help="interpreter the tasks run (default: this one)")
    s.add_argument("--dry-run", action="store_true", help="write and print the script, do not submit it")
    return p.parse_args(argv)


def _time_seconds(text: str) -> int:
    """Slurm's time limit in seconds (`--time` was checked against `_TIME`)."""
    days, _, clock = text.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
        return int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    mult = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(parts)]  # MM, MM:SS, HH:MM:SS
    return sum(a * b for a, b in zip(parts, mult))


def check_one_line(args: argparse.Namespace) -> None:
    """Every value on the command line is copied into the script's header, so none may hold a control character.

    Raises:
        ScriptError: The first such value, named by its flag (`--set 'log.root=...'`).
    """
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_line(_FLAGS.get(dest, "--" + dest.replace("_", "-")), text)


def check_allocation(args: argparse.Namespace) -> None:
    """Options that contradict each other or Slurm's syntax, as one-line errors.

    Raises:
        LaunchError: A bad `--time`, a signal margin past the time limit, more nodes than groups, a `--python` that
            is not executable, an `--sbatch-arg` that is not an option.
    """
    for option in args.sbatch_arg:
        if not option.startswith("-"):
            raise LaunchError(f"--sbatch-arg '{option}': expected one sbatch option, e.g. --cpus-per-task=8")
    if args.time is not None:
        if not _TIME.fullmatch(args.time):
            raise LaunchError(f"--time '{args.time}': expected HH:MM:SS, MM, MM:SS or D-HH:MM:SS")
        if args.signal_margin >= _time_seconds(args.time):
            raise LaunchError(f"--signal-margin {args.signal_margin} is not shorter than --time {args.time}; "
                              f"the run would be signalled before it starts")
    if args.processes and args.groups:
        raise LaunchError("--processes with --groups: a task is either MPI groups or one jax.distributed mesh")
    if args.nodes and args.processes and args.processes < args.nodes:
        raise LaunchError(f"--nodes {args.nodes} with --processes {args.processes}: each node needs a process, "
                          f"so --processes must be at least --nodes")
    if args.nodes and args.groups and args.groups < args.nodes:
        raise LaunchError(f"--nodes {args.nodes} with --groups {args.groups}: each node needs a group, "
                          f"so --groups must be at least --nodes")
    python = shutil.which(args.python) or args.python
    if not os.access(python, os.X_OK):
        raise LaunchError(f"--python '{args.python}' is not an executable file")


def build_spec(args: argparse.Namespace) -> JobSpec:
    """Parses the sweep and loads every combination's config, so a bad key or value fails before anything exists.

    Raises:
        UserError: A bad seed list, sweep, option, config key or value (ConfigError names the key), or a value with
            a control character (ScriptError).
    """
    from jaxrl_dist.config import load_config
    from jaxrl_dist.config.load import config_path
    from jaxrl_dist.io import resolve_experiment_dir

    check_one_line(args)
    check_allocation(args)
    sweeps = [parse_sweep(text) for text in args.sweep]
    check_sweeps(sweeps, args.sets)
    groups = [f"roles.groups.count={args.groups}"] if args.groups else []
    base = load_config(args.config, list(args.sets) + groups)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [base.train.seed]
    combos = expand(seeds, sweeps)
    for combo in combos:
        try:
            load_config(args.config, list(args.sets) + groups + combo.overrides, seed=combo.seed)
        except UserError as e:
            raise type(e)(f"run {combo.name}: {e}") from None
    name = args.exp_name or Path(args.config).stem
    exp_dir = resolve_experiment_dir(base.log.root, name)
    for combo in combos:
        resolve_experiment_dir(base.log.root, f"{name}/{combo.name}")
    return JobSpec(
        name=name, exp_dir=exp_dir, config=config_path(args.config).resolve(), workdir=Path.cwd(),
        python=shutil.which(args.python) or args.python, combos=tuple(combos), sets=tuple(args.sets),
        nodes=args.nodes, groups=args.groups, processes=args.processes, gpus_per_node=args.gpus_per_node,
        partition=args.partition, time=args.time, signal_margin_s=args.signal_margin,
        sbatch_args=tuple(args.sbatch_arg), mpi=args.mpi,
    )


def write_job(spec: JobSpec, command_line: str) -> Path:
    """Writes the script and manifest into `<exp>/slurm/`; returns the script's path.

    Raises:
        ScriptError: A value the script cannot hold; nothing is written then.
    """
    text = render(spec, command_line)
    spec.slurm_dir.mkdir(parents=True, exist_ok=True)
    script = spec.slurm_dir / SCRIPT_FILE
    script.write_text(text)
    script.chmod(0o755)
    (spec.slurm_dir / MANIFEST_FILE).write_text(json.dumps(manifest(spec, command_line), indent=2) + "\n")
    return script


def submit(script: Path) -> str:
    """`sbatch --parsable SCRIPT`; returns the job id.

    Raises:
        LaunchError: sbatch is missing, refused the job (its message), or did not answer in time.
    """
    if shutil.which("sbatch") is None:
        raise LaunchError("sbatch is not on PATH; run on a Slurm login node, or use --dry-run to only write "
                          f"the script ({script})")
    try:
        done = subprocess.run(["sbatch", "--parsable", str(script)], check=False, capture_output=True, text=True,
                              timeout=SBATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"sbatch did not answer within {SBATCH_TIMEOUT_S:.0f} s; is slurmctld up?") from None
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise LaunchError(f"sbatch refused {script}: {reason}")
    return done.stdout.strip().split(";")[0]  # --parsable prints `jobid[;cluster]`


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command_line = shlex.join(["python", "-m", "jaxrl_dist.launch", *(sys.argv[1:] if argv is None else argv)])
    try:
        spec = build_spec(args)
        script = write_job(spec, command_line)
        if args.dry_run:
            print(script.read_text(), end="")
            print(f"# dry run: {len(spec.combos)} task(s) written to {script}, not submitted", flush=True)
            return 0
        job = submit(script)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    out = spec.slurm_dir / ("%A_%a.out" if len(spec.combos) > 1 else "%j.out")
    print(f"submitted job {job}: {len(spec.combos)} task(s) of {spec.name}", flush=True)
    print(f"runs: {spec.exp_dir}/<combination>/ (manifest {spec.slurm_dir / MANIFEST_FILE})", flush=True)
    print(f"logs: {out}", flush=True)
    print(f"report: python -m jaxrl_dist.report {spec.exp_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
