"""The sbatch script and manifest of a launch (pure: text in, text out; `jaxrl_dist.launch` writes and submits them).

One script serves the whole array: `SLURM_ARRAY_TASK_ID` picks the combination, whose run lives in
`<experiment>/<combination>/`. What the script does for one task, in order:

1. A task whose directory holds `slurm_done` finished before (a requeue after the end): it exits 0 at once.
2. It starts `train` in the background (so the shell can take signals) with `--resume` when the directory
   holds a checkpoint, `--overwrite` when it holds a run that was cut off before its first checkpoint.
3. SIGUSR1 from `--signal=B:USR1@<margin>` (or `scancel --batch --signal=USR1`) and SIGTERM reach the shell,
   which forwards them to train; train saves a checkpoint and exits with 128 + the signal.
4. Exit 0: it writes `slurm_done`. Exit 138 (SIGUSR1): `scontrol requeue` puts the task back in the queue, and the
   requeued task resumes from that checkpoint. Any other code is the task's exit code.

Every value in the shell part is quoted with `shlex.quote`. The header is read by sbatch, not a shell: the launch
command line and the paths are comments there, and each `#SBATCH` option is quoted for sbatch's own parser
(`sbatch_word`). A newline would end such a line and turn the rest into a command (which also ends sbatch's
reading of `#SBATCH` options), so a value with any control character is refused (issue 17).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxrl_dist.errors import UserError
from jaxrl_dist.slurm.sweep import Combination

DONE_FILE = "slurm_done"  # in a combination's directory: that task finished (exit 0) and never trains again
MANIFEST_FILE = "manifest.json"
SCRIPT_FILE = "job.sbatch"
PREEMPT_EXIT = 128 + 10  # train's exit code after SIGUSR1 (128 + signal number): checkpoint saved, requeue me

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 and DEL: a newline (or CR, NUL, ...) has no place in one line
_SBATCH_SPECIAL = re.compile(r"[\s\"'\\#]")  # what sbatch splits an #SBATCH line at, or strips, or cuts it at
_HETJOB = re.compile("hetjob|packjob", re.IGNORECASE)  # anywhere in an #SBATCH line: the next hetjob component


class ScriptError(UserError):
    """A value that cannot be written into the sbatch script as it is (names the option or key and the value)."""


def check_line(what: str, value: str) -> str:
    """Returns `value`, which goes into one line of the script (a comment or an `#SBATCH` line).

    Raises:
        ScriptError: `value` holds a control character: a newline would end the line and run the rest.
    """
    bad = _CONTROL.search(value)
    if bad:
        raise ScriptError(f"{what} {value!r} contains the control character {bad.group()!r}; a value that goes "
                          f"into the sbatch script must be one line of printable text")
    return value


def sbatch_word(what: str, option: str) -> str:
    """`option` as one argument of an `#SBATCH` line, written so that sbatch reads it back unchanged.

    sbatch splits these lines itself (`get_argument` in Slurm's src/sbatch/opt.c, no shell): whitespace separates
    arguments, double quotes group them, a backslash makes the next character literal and an unquoted `#` ends the
    line. So an option with any of these is double-quoted with `"`, `\\` and `#` escaped, which old and new
    sbatch read alike (`--comment=two words` -> `"--comment=two words"`); other options are written as they are.

    Raises:
        ScriptError: A control character, or `hetjob`/`packjob`, which sbatch takes anywhere in an `#SBATCH`
            line for the start of a heterogeneous job's next component.
    """
    check_line(what, option)
    het = _HETJOB.search(option)
    if het:
        raise ScriptError(f"{what} {option!r}: sbatch reads an #SBATCH line that contains '{het.group()}' as the "
                          f"start of another job; use another name")
    if not _SBATCH_SPECIAL.search(option):
        return option
    return '"' + re.sub(r'(["\\#])', r"\\\1", option) + '"'


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything the script needs. Paths are absolute so the job does not depend on where sbatch ran.

    Attributes:
        name: the experiment name (`--exp-name`), also the Slurm job name.
        exp_dir: `<log.root>/<name>`; each combination trains into `exp_dir/<combination.name>`.
        config: the config file.
        workdir: the directory the job runs in (where launch ran: a relative `log.root` means the same there).
        python: the interpreter that runs train (launch's own by default).
        combos: one per array task.
        sets: `--set KEY=VALUE` for every task.
        nodes, groups, processes, gpus_per_node, partition, time: the allocation (`None` leaves Slurm's default).
        signal_margin_s: seconds before the time limit at which Slurm sends SIGUSR1.
        sbatch_args: extra `#SBATCH` options, one sbatch argument each (`--comment=two words` is one).
        mpi: `srun --mpi=` of a job with several processes. The MPICH wheels of the `mpi` extra speak PMI-2, not
            PMIx (their MPI_Init aborts with "unsupported PMI version PMIx"); `pmix` suits an MPI built for it.
    """

    name: str
    exp_dir: Path
    config: Path
    workdir: Path
    python: str
    combos: tuple[Combination, ...]
    sets: tuple[str, ...] = ()
    nodes: int | None = None
    groups: int | None = None
    processes: int | None = None  # jax.distributed processes per task (default: one per node)
    gpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    signal_margin_s: int = 180
    sbatch_args: tuple[str, ...] = ()
    mpi: str = "pmi2"

    @property
    def slurm_dir(self) -> Path:
        return self.exp_dir / "slurm"

    @property
    def tasks_per_run(self) -> int:
        """Processes per combination: one per group, else one per node; more than one means `srun`."""
        return self.groups or self.processes or self.nodes or 1


def _log_pattern(spec: JobSpec) -> str:
    """`--output`'s file pattern: `%` in the directory doubled (Slurm's literal `%`), then `%A_%a.out` or `%j.out`.

    Raises:
        ScriptError: A backslash in the directory: Slurm would then take the whole pattern literally.
    """
    folder = str(spec.slurm_dir)
    if "\\" in folder:
        raise ScriptError(f"log.root: the log directory {folder!r} contains a backslash, which makes Slurm write "
                          f"every task's log to one file named after the --output pattern; use a path without one")
    return f"{folder.replace('%', '%%')}/{'%A_%a.out' if len(spec.combos) > 1 else '%j.out'}"


def sbatch_options(spec: JobSpec) -> list[tuple[str, str]]:
    """The `#SBATCH` options in the order they appear, each with the option or key it comes from (for errors)."""
    n = len(spec.combos)
    opts = [("--exp-name", f"--job-name={spec.name.replace('/', '_')}")]
    if n > 1:
        opts.append(("--seeds/--sweep", f"--array=0-{n - 1}"))
    opts += [
        ("log.root: the log file", f"--output={_log_pattern(spec)}"),
        ("", "--open-mode=append"),  # a requeued task appends to its log instead of truncating it
        ("", "--requeue"),
        ("--signal-margin", f"--signal=B:USR1@{spec.signal_margin_s}"),  # B: the batch shell gets it, tells train
    ]
    if spec.nodes:
        opts.append(("--nodes", f"--nodes={spec.nodes}"))
    if spec.tasks_per_run > 1:
        opts.append(("--groups/--processes", f"--ntasks={spec.tasks_per_run}"))
    if spec.gpus_per_node:
        opts.append(("--gpus-per-node", f"--gpus-per-node={spec.gpus_per_node}"))
    if spec.partition:
        opts.append(("--partition", f"--partition={spec.partition}"))
    if spec.time:
        opts.append(("--time", f"--time={spec.time}"))
    return opts + [("--sbatch-arg", a) for a in spec.sbatch_args]


def train_words(spec: JobSpec) -> list[str]:
    """The command that trains one task, up to the per-task arguments (`srun ...` in front for several processes)."""
    words = [spec.python, "-m", "jaxrl_dist.train", "--config", str(spec.config), "--quiet"]
    for s in spec.sets:
        words += ["--set", s]
    if spec.groups:
        words += ["--set", f"roles.groups.count={spec.groups}"]
    elif spec.tasks_per_run > 1:
        # One process per node, one learner mesh over all of them: jax.distributed reads the srun step's SLURM_*.
        words += ["--distributed"]
    if spec.tasks_per_run > 1:
        # One process per group/node; MPI finds its peers through Slurm's PMI server (srun --mpi).
        words = ["srun", f"--mpi={spec.mpi}", f"--ntasks={spec.tasks_per_run}", *words]
    return words


def _case_arms(combos: Sequence[Combination]) -> list[str]:
    arms = []
    for c in combos:
        args = ["--seed", str(c.seed)] + [w for o in c.overrides for w in ("--set", o)]
        arms.append(f"  {c.index}) RUN={shlex.quote(c.name)}; ARGS=({shlex.join(args)}) ;;")
    return arms


def render(spec: JobSpec, command_line: str) -> str:
    """The sbatch script: `command_line` (how launch was called) goes into its header.

    Raises:
        ScriptError: A value that cannot be written into the header as it is (see `check_line`, `sbatch_word`).
    """
    q = shlex.quote
    check_line("the launch command line", command_line)
    check_line("log.root: the experiment directory", str(spec.exp_dir))
    lines = [
        "#!/bin/bash",
        "# Generated by jaxrl_dist.launch; see slurm/README.md. Launched with:",
        f"#   {command_line}",
        f"# Task i ($SLURM_ARRAY_TASK_ID, 0 outside an array) trains combination i of {spec.slurm_dir / MANIFEST_FILE}",
        f"# into {spec.exp_dir}/<combination>/.",
        *(f"#SBATCH {sbatch_word(what, o)}" for what, o in sbatch_options(spec)),
        "set -uo pipefail",
        f"cd {q(str(spec.workdir))}",
        'case "${SLURM_ARRAY_TASK_ID:-0}" in',
        *_case_arms(spec.combos),
        '  *) echo "error: no combination for array task ${SLURM_ARRAY_TASK_ID}" >&2; exit 2 ;;',
        "esac",
        f"DIR={q(str(spec.exp_dir))}/$RUN",
        "TASK=${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}",
        'echo "task $TASK: $RUN (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname) at $(date -u +%FT%TZ)"',
        f'if [[ -f $DIR/{DONE_FILE} ]]; then echo "task $TASK: $RUN finished before; not training again"; exit 0; fi',
        "MODE=()",
        'if [[ -n $(ls -A "$DIR/checkpoints" 2>/dev/null) ]]; then MODE=(--resume)',
        "# A run cut off before its first checkpoint has nothing to resume: it starts over.",
        'elif [[ -e $DIR/config.yaml || -e $DIR/metrics.jsonl ]]; then MODE=(--overwrite)',
        "fi",
        "# Slurm signals this shell (B:USR1 before the time limit, TERM on preemption): pass it on to train,",
        "# also one that came while train was being started.",
        'CHILD=""; SIG=""',
        'forward() { SIG=$1; if [[ -n $CHILD ]]; then kill -"$1" "$CHILD" 2>/dev/null; fi; }',
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM",
        f'{shlex.join(train_words(spec))} --exp-name {q(spec.name)}/"$RUN" "${{ARGS[@]}}" "${{MODE[@]}}" &',
        "CHILD=$!",
        'if [[ -n $SIG ]]; then kill -"$SIG" "$CHILD" 2>/dev/null; fi',
        'wait "$CHILD"; RC=$?',
        '# A trapped signal interrupts `wait`; wait again until train itself has exited.',
        'while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD"; RC=$?; done',
        'echo "task $TASK: train exited with $RC"',
        f'if [[ $RC == 0 ]]; then date -u +%FT%TZ > "$DIR/{DONE_FILE}"; fi',
        f"if [[ $RC == {PREEMPT_EXIT} ]]; then",
        '  echo "task $TASK: checkpoint saved; requeueing"',
        '  scontrol requeue "$TASK" && exit 0',
        "fi",
        "exit $RC",
    ]
    return "\n".join(lines) + "\n"


def manifest(spec: JobSpec, command_line: str) -> dict[str, Any]:
    """The JSON written next to the script: what each array index trains (read back by `jaxrl_dist.report`)."""
    return {
        "name": spec.name,
        "config": str(spec.config),
        "command": command_line,
        "sets": list(spec.sets),
        "tasks": [
            {"index": c.index, "name": c.name, "seed": c.seed, "sweep": dict(c.values), "label": c.sweep_label,
             "dir": str(spec.exp_dir / c.name)}
            for c in spec.combos
        ],
    }
