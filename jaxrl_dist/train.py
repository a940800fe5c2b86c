"""`python -m jaxrl_dist.train --config FILE [--exp-name NAME] [--set key=value ...] [--resume] [--seed N]`."""

from __future__ import annotations

import time

START_TIME = time.time()  # process start as seen by this module: the origin of every `wall_s`

import argparse  # noqa: E402 - after START_TIME on purpose
import shlex  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from jaxrl_dist.config import Config
    from jaxrl_dist.distributed.peers import Peers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_dist.train", description="Train an RL agent from a config.")
    p.add_argument("--config", required=True, help="YAML or Python config file (see configs/)")
    p.add_argument("--exp-name", help="experiment directory under log.root (default: the config's name, with "
                   "_seed<N> after --seed N, and -2, -3, ... when that name holds a previous run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set algo.lr=3e-4 (repeatable)")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    p.add_argument("--resume", action="store_true", help="continue the experiment from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing experiment directory")
    p.add_argument("--quiet", action="store_true", help="plain progress lines (CI, Slurm logs)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every key, defaults included) as YAML, then exit")
    p.add_argument("--print-topology", action="store_true",
                   help="print the resolved roles, devices, queues and batch sizes, then exit")
    p.add_argument("--jax-profile", type=float, nargs="?", const=5.0, metavar="SECONDS",
                   help="trace XLA ops with jax.profiler for SECONDS (default 5) once learning starts")
    p.add_argument("--profile", action="store_true",
                   help="record every role's spans into trace_<start>.json in the experiment (opens in Perfetto)")
    p.add_argument("--distributed", action="store_true",
                   help="one learner mesh over the processes of this srun / mpirun job (jax.distributed)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator (process 0's address)")
    p.add_argument("--num-processes", type=int, metavar="N", help="jax.distributed: processes in the run")
    p.add_argument("--process-id", type=int, metavar="I", help="jax.distributed: this process, 0 to N-1")
    p.add_argument("--export", metavar="FORMAT",
                   help="export the final policy: onnx, savedmodel or all (see python -m jaxrl_dist.export)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Heavy imports after argument parsing, so `--help` and config errors answer at once.
    from jaxrl_dist.config import load_config, to_dict
    from jaxrl_dist.errors import RoleError, UserError
    from jaxrl_dist.io import resolve_experiment_dir
    from jaxrl_dist.io.experiment import ExperimentLock, has_checkpoint, prepare_experiment_dir, write_config_snapshot

    overrides = list(args.overrides) + (["log.quiet=true"] if args.quiet else []) + (
        ["log.profile=true"] if args.profile else []) + (
        [f"log.jax_profile_s={args.jax_profile}"] if args.jax_profile is not None else [])
    group = None
    try:
        cfg = load_config(args.config, overrides, seed=args.seed)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        if args.print_topology:
            from jaxrl_dist.roles.topology import describe

            print(describe(cfg))
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    from jaxrl_dist.roles.signals import Interrupted, Signals, leave, signal_name

    signals = Signals().install()  # from here until the process exits, no signal ends it between two saves
    lock = ExperimentLock()  # the lead's hold on the experiment directory, released when the process ends
    try:
        with signals.interruptible("starting up"):
            group = _peers(args, cfg)  # MPI groups or jax.distributed processes; None for a lone process
            lead = group is None or group.lead  # the process that writes the experiment directory
            name = args.exp_name or _default_name(args, cfg.log.root, lone=group is None)
            exp_dir = resolve_experiment_dir(cfg.log.root, name)
            if args.resume:
                _check_resume_config(exp_dir, cfg, args.config)
            from jaxrl_dist.roles.graph import prepare

            setup = prepare(cfg, group)  # bad env ids, devices and sizes fail here, before the experiment dir exists
            export_formats = _export_formats(args.export)  # a missing ONNX / TF runtime fails before training
            # --resume without a finished checkpoint (never started, or killed during its first save: what a
            # requeued Slurm task finds) starts the run afresh in its directory.
            resume = args.resume and has_checkpoint(exp_dir)
            if lead:
                exp_dir = prepare_experiment_dir(exp_dir, resume=args.resume, overwrite=args.overwrite, lock=lock)
                if resume != (args.resume and has_checkpoint(exp_dir)):
                    raise UserError(f"experiment dir {exp_dir}: its checkpoints changed while this run started; "
                                    f"start it again")
                if args.resume and not resume:
                    print(f"note: no finished checkpoint in {exp_dir / 'checkpoints'} to resume from; starting a "
                          f"fresh run there", flush=True)
            if lead and not resume:
                write_config_snapshot(exp_dir, to_dict(cfg))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if group is not None:
            group.agree(False, "start")  # the other groups stop too
        return leave(e.exit_code)
    except Interrupted as e:
        print(f"{signal_name(e.signum)} while starting up; nothing was trained or saved", file=sys.stderr)
        return leave(128 + e.signum)
    if group is not None and not group.agree(True, "start"):
        print(f"error: {group.kind} {group.rank}: another {group.kind} could not start the run (its error is above)",
              file=sys.stderr)
        return leave(2)

    from jaxrl_dist.roles import train

    if lead:
        print(f"experiment: {exp_dir}" + (f" ({group.count} {group.plural})" if group else ""), flush=True)
        if cfg.roles.compile_cache:
            cached = sum(1 for _ in Path(cfg.roles.compile_cache).expanduser().glob("*"))
            print(f"compile cache: {cfg.roles.compile_cache} ({cached} programs before this run)", flush=True)
    try:
        result = train(cfg, exp_dir, resume=resume, start_time=START_TIME, group=group, setup=setup, signals=signals)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if group is not None:
            group.abort(f"{group.kind} {group.rank} stopped")
        return leave(e.exit_code)
    except RoleError as e:
        print(f"error: role '{e.role}' failed; the run was stopped:\n{e.tb}", file=sys.stderr)
        if group is not None:
            group.abort(f"{group.kind} {group.rank}: role '{e.role}' failed")
        return leave(1)
    except Interrupted as e:  # while the graph was built or the checkpoint restored
        print(f"{signal_name(e.signum)} before training started; nothing was trained or saved", file=sys.stderr)
        return leave(128 + e.signum)
    except Exception:  # noqa: BLE001 - a crash of the driver itself: traceback, non-zero exit
        traceback.print_exc()
        if group is not None:
            group.abort(f"{group.kind} {group.rank} crashed")
        return leave(1)
    signum = result.signal or signals.signum  # also one that came after the roles had stopped
    if not lead:
        return leave(128 + signum if signum else 0)
    best = f", best eval return {result.best_eval:.1f}" if result.best_eval is not None else ""
    print(f"{result.reason}: {result.env_steps} env steps, {result.updates} updates in {result.wall_s:.1f} s{best}",
          flush=True)
    if signum:
        launcher = f"mpirun -n {group.count} " if group is not None and group.kind == "group" else ""
        print(f"checkpoint saved; continue with: {launcher}{resume_command(argv, name)}", flush=True)
        return leave(128 + signum)
    if not export_formats:
        return leave(0)
    try:
        with signals.interruptible("exporting"):
            return leave(_export_final(exp_dir, export_formats))
    except Interrupted as e:
        print(f"{signal_name(e.signum)} during the export: training finished and was saved, no export file was "
              f"replaced; export with: {_export_command(exp_dir, export_formats)}", file=sys.stderr)
        return leave(128 + e.signum)


def _peers(args: argparse.Namespace, cfg: Config) -> Peers | None:
    """This process's MPI group (`roles.groups.count > 1`) or place in a `jax.distributed` run (`--distributed` or
    `--coordinator ...`), or None. The two do not combine."""
    from jaxrl_dist.distributed.groups import open_group
    from jaxrl_dist.distributed.processes import initialize
    from jaxrl_dist.errors import ConfigError

    groups = cfg.roles.groups
    multiprocess = args.distributed or args.coordinator is not None or args.num_processes is not None
    if multiprocess and groups.count > 1:
        raise ConfigError(f"config key 'roles.groups.count': value {groups.count} with --distributed; a run is "
                          f"either MPI groups or one jax.distributed mesh (allowed with --distributed: 1)")
    if groups.count > 1:
        return open_group(groups.count, groups.timeout_s)
    return initialize(args.coordinator, args.num_processes, args.process_id, args.distributed, groups.timeout_s)


def _export_formats(value: str | None) -> list[str]:
    """The `--export` formats, checked (names and installed runtimes) before anything is trained."""
    if value is None:
        return []
    from jaxrl_dist.export import parse_formats, require

    formats = parse_formats(value)
    require(formats)
    return formats


def _export_final(exp_dir: Path, formats: list[str]) -> int:
    """Exports the final checkpoint; a failure leaves the trained run intact and says how to retry."""
    from jaxrl_dist.errors import UserError
    from jaxrl_dist.export import export_policy
    from jaxrl_dist.io.policy import load_policy

    retry = _export_command(exp_dir, formats)
    try:
        export_policy(load_policy(exp_dir), formats, log=lambda line: print(f"export {line}", flush=True))
    except UserError as e:
        print(f"error: training finished and was saved, but the export failed: {e}\nretry with: {retry}",
              file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a converter crash: its traceback, and the run is still saved
        traceback.print_exc()
        print(f"error: training finished and was saved, but the export crashed (above)\nretry with: {retry}",
              file=sys.stderr)
        return 1
    return 0


def _export_command(exp_dir: Path, formats: list[str]) -> str:
    return shlex.join(["python", "-m", "jaxrl_dist.export", "--experiment", str(exp_dir), "--format",
                       ",".join(formats)])


def _default_name(args: argparse.Namespace, root: str, lone: bool) -> str:
    """The experiment name without `--exp-name`: the config's name (`_seed<N>` added after `--seed N`). A new run of a
    lone process whose name holds a previous run takes the first free `<name>-2`, `<name>-3`, ... and says so;
    `--resume` and `--overwrite` mean the name itself."""
    from jaxrl_dist.io.experiment import free_experiment_name

    name = Path(args.config).stem + (f"_seed{args.seed}" if args.seed is not None else "")
    if args.resume or args.overwrite or not lone:
        return name
    free = free_experiment_name(root, name)
    if free != name:
        print(f"note: experiment {name} holds a previous run; this one is {free} (--resume continues {name}, "
              f"--exp-name names a run)", flush=True)
    return free


def resume_command(argv: list[str] | None, exp_name: str) -> str:
    """The command line that continues this run: the same arguments, `--resume` instead of `--overwrite`."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--overwrite", "--resume")]
    if "--exp-name" not in args and not any(a.startswith("--exp-name=") for a in args):
        args += ["--exp-name", exp_name]
    return shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "jaxrl_dist.train", *args, "--resume"])


def _check_resume_config(exp_dir: Path, cfg: object, source: str) -> None:
    """A resumed run must use the config it was started with (overrides that change it are refused)."""
    import yaml

    from jaxrl_dist.config import to_dict
    from jaxrl_dist.errors import ConfigError

    snapshot = exp_dir / "config.yaml"
    if not snapshot.is_file():
        return  # prepare_experiment_dir reports a missing experiment
    try:
        saved_tree = yaml.safe_load(snapshot.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{snapshot} cannot be read ({type(e).__name__}); it is needed to --resume") from None
    if not isinstance(saved_tree, dict):
        raise ConfigError(f"{snapshot} does not hold a config mapping; it is needed to --resume")
    saved, now = _flatten(saved_tree), _flatten(to_dict(cfg))
    changed = [k for k in now if saved.get(k) != now[k] and not k.startswith(RESUMABLE)]
    if changed:
        raise ConfigError(
            f"{source}: --resume with a config that differs from {snapshot} in {', '.join(changed)}; "
            f"allowed to change on resume: {', '.join(p + '*' if p.endswith('.') else p for p in RESUMABLE)}"
        )


# Keys a resumed run may change: the budget and what is observed, never what shapes learning.
RESUMABLE = ("train.total_env_steps", "log.", "eval.", "checkpoint.interval", "checkpoint.keep", "roles.evaluator.")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "kwargs":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
