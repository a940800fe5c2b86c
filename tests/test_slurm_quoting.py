"""The sbatch script of `launch slurm` with hostile values (issue 17, item 8): a newline or other control character
in any value that reaches the script is refused in one line with exit code 2 and nothing written; shell and sbatch
metacharacters (spaces, quotes, `#`, `%`, `$(...)`, backticks, `;`) reach train and sbatch exactly as given and
run nothing.

`launch.main` runs in this process (one config import for the whole module); the scripts it writes run under bash
with `--python` pointing at a stub that records its arguments, so no test here needs Slurm but the last one, which
submits a job whose log.root has spaces to the real cluster of tests/slurm_cluster.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_runs import DEFAULT
from slurm_cluster import slurm, wait_job

from jaxrl_dist import launch
from jaxrl_dist.slurm import DONE_FILE

# A run of a few seconds: CartPole, small eval, no TensorBoard (as in test_slurm.py).
TINY = ("log.tensorboard=false", "train.total_env_steps=3000", "train.learning_starts=500", "eval.interval=1000",
        "eval.episodes=2", "eval.target_return=null")


def launch_here(*args: str) -> tuple[int, str, str]:
    """`python -m jaxrl_dist.launch slurm ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = launch.main(["slurm", *args])
    return code, out.getvalue(), err.getvalue()


def stub_python(folder: Path) -> Path:
    """An executable `python` in `folder` that writes its arguments (NUL-separated) to `folder/args` and exits 0."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "python"
    stub.write_text(f"#!/bin/bash\nprintf '%s\\0' \"$@\" > {shlex.quote(str(folder / 'args'))}\n")
    stub.chmod(0o755)
    return stub


def run_script(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Runs a generated script as the batch shell of array task 0 of job 7 would (no Slurm needed)."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "7"}
    return subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env)


def sbatch_reads(script: str) -> list[str]:
    """The options sbatch takes from `script`, split as sbatch splits an `#SBATCH` line (get_argument in
    src/sbatch/opt.c): it reads `#SBATCH` lines up to the first line that is not blank or a comment; whitespace
    separates arguments, "..." and '...' group, a backslash escapes the next character, an unquoted `#` ends the line.
    """
    options: list[str] = []
    for line in script.split("\n"):
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.lstrip().startswith("#"):
                break  # the first command: sbatch reads no option after it
            continue
        i, rest = 0, line[len("#SBATCH"):]
        while True:
            while i < len(rest) and rest[i].isspace():
                i += 1
            if i == len(rest):
                break
            arg, quote, escape = "", "", False
            while i < len(rest) and (quote or not rest[i].isspace()):
                ch = rest[i]
                i += 1
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                    continue
                elif quote:
                    if ch == quote:
                        quote = ""
                        continue
                elif ch in "\"'":
                    quote = ch
                    continue
                elif ch == "#":
                    i = len(rest)
                    break
                arg += ch
            assert not quote, f"unmatched {quote} in {line!r}: sbatch refuses the script"
            if arg:
                options.append(arg)
    return options


# ------------------------------------------------------------------------------------------------ refused values

# (arguments, what the error must name). INJECT stands for a newline and a command that creates the marker file,
# whose trailing `#` comments out the rest of its line, so that a script that let it in does run it. CONFIG is a
# config file with INJECT in its name, NEWLINE_ROOT_CONFIG one whose log.root has INJECT in it.
INJECTIONS = [
    (("--partition", "xINJECT"), "--partition"),
    (("--partition", "x\rtouch MARK"), "--partition"),
    (("--partition", "x\x1b[2Jy"), "--partition"),
    (("--sbatch-arg=--comment=xINJECT",), "--sbatch-arg"),
    (("--sbatch-arg=--comment=x\ttab",), "--sbatch-arg"),
    (("--exp-name", "xINJECT"), "--exp-name"),
    (("--set", "log.root=ROOT/xINJECT"), "--set 'log.root="),
    (("--sweep", "algo.lr=1e-3,3e-4INJECT"), "--sweep"),
    (("--config", "CONFIG"), "--config"),
    (("--config", "NEWLINE_ROOT_CONFIG"), "log.root"),  # from the config file, not the command line
]


@pytest.mark.parametrize("args, names", INJECTIONS, ids=[f"{i}-{n.split()[0]}" for i, (_, n) in enumerate(INJECTIONS)])
def test_a_control_character_is_refused_and_nothing_runs(tmp_path, args, names):
    marker = tmp_path / "PWNED"
    inject = f"\ntouch {marker} #"
    root = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    shutil.copy(DEFAULT, config)
    odd = tmp_path / f"c{inject}.yaml"  # a config file whose name holds a newline is still a config file
    odd.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEFAULT, odd)
    newline_root = tmp_path / "newline_root.yaml"
    newline_root.write_text(Path(DEFAULT).read_text() + f"log:\n  root: {json.dumps(str(root) + inject)}\n")
    subs = {"INJECT": inject, "MARK": str(marker), "ROOT": str(root), "NEWLINE_ROOT_CONFIG": str(newline_root),
            "CONFIG": str(odd)}
    args = tuple(re.sub("|".join(subs), lambda m: subs[m.group()], a) for a in args)
    base = {"--config": str(config), "--exp-name": "inj"}
    cmd = [w for flag, value in base.items() if flag not in args for w in (flag, value)]
    if str(newline_root) not in args:
        cmd += ["--set", f"log.root={root}"]
    code, _, err = launch_here(*cmd, *args, *(w for s in TINY for w in ("--set", s)),
                               "--python", str(stub_python(tmp_path / "bin")), "--dry-run")
    for script in tmp_path.rglob("job.sbatch"):  # a script was written after all: run it as Slurm would
        run_script(script, tmp_path)
    assert not marker.exists(), "the injected command ran"
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and names in err, err
    assert "control character" in err, err
    assert not list(tmp_path.rglob("job.sbatch")) and not list(tmp_path.rglob("manifest.json"))


@pytest.mark.parametrize("args, says", [
    (("--partition", "hetjob_q"), "hetjob"),  # sbatch starts the next component of a heterogeneous job there
    (("--sbatch-arg=--comment=packjob",), "packjob"),
    (("--sbatch-arg=cpus-per-task=2",), "--sbatch-arg 'cpus-per-task=2'"),
    (("--set", "log.root=ROOT/back\\slash"), "backslash"),  # Slurm's --output would take the path literally
])
def test_what_sbatch_would_misread_is_refused(tmp_path, args, says):
    args = tuple(a.replace("ROOT", str(tmp_path)) for a in args)
    code, _, err = launch_here("--config", DEFAULT, "--exp-name", "mis", "--set", f"log.root={tmp_path}", *args,
                               "--dry-run")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not list(tmp_path.rglob("job.sbatch"))


# ------------------------------------------------------------------------------------------------ metacharacters


def test_metacharacters_reach_train_and_sbatch_unchanged(tmp_path):
    """Spaces, quotes, `#`, `%`, `$(...)`, backticks and `;` in every value: bash and sbatch read them back as given."""
    marker = tmp_path / "PWNED"
    evil = f"$(touch {marker}) `touch {marker}`;touch {marker}"
    root = tmp_path / f"runs #1 100% it's \"q\" {evil}"
    config = tmp_path / f"cfg dir {evil}" / "c.yaml"
    config.parent.mkdir(parents=True)
    shutil.copy(DEFAULT, config)
    python = stub_python(tmp_path / f"py dir {evil}")
    partition = f"x;{evil}"
    comment = f"--comment=two  words #{evil}"
    sets = [f"log.root={json.dumps(str(root))}", *TINY]  # YAML quotes: unquoted, ` #` would start a comment
    code, out, err = launch_here("--config", str(config), "--exp-name", "q", "--seeds", "3", "--partition", partition,
                                 f"--sbatch-arg={comment}", "--python", str(python),
                                 *(w for s in sets for w in ("--set", s)), "--dry-run")
    assert code == 0, err
    exp = root / "q"
    script = exp / "slurm" / "job.sbatch"
    text = script.read_text()
    assert out.startswith(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert sbatch_reads(text) == [
        "--job-name=q", f"--output={str(exp).replace('%', '%%')}/slurm/%j.out", "--open-mode=append", "--requeue",
        "--signal=B:USR1@180", f"--partition={partition}", comment]

    (exp / "seed3").mkdir(parents=True)  # train (here a stub) makes the run directory
    done = run_script(script, tmp_path)
    assert not marker.exists(), "a value ran as a command"
    assert done.returncode == 0, done.stderr
    args = (python.parent / "args").read_text().split("\0")[:-1]
    assert args == ["-m", "jaxrl_dist.train", "--config", str(config), "--quiet",
                    *(w for s in sets for w in ("--set", s)), "--exp-name", "q/seed3", "--seed", "3"]
    assert (exp / "seed3" / DONE_FILE).is_file()


# ------------------------------------------------------------------------------------------------ real cluster


def test_log_root_with_spaces_on_the_cluster(slurm_cluster, tmp_path):
    """sbatch itself reads the quoted #SBATCH lines: the log lands under a log.root with spaces, quotes, `#`, `%`."""
    root = tmp_path / "my runs #1 100% it's \"q\""
    code, out, err = launch_here("--config", DEFAULT, "--exp-name", "sp", "--seeds", "0",
                                 "--sbatch-arg=--comment=two words #x",
                                 *(w for s in (f"log.root={json.dumps(str(root))}", *TINY) for w in ("--set", s)))
    assert code == 0, err
    job = out.split()[2].rstrip(":")
    states = wait_job(job, timeout=600)
    log = root / "sp" / "slurm" / f"{job}.out"
    assert states == {job: "COMPLETED"}, log.read_text()[-3000:] if log.is_file() else states
    fields = slurm("scontrol", "show", "job", "-o", job)
    assert "Comment=two words #x" in fields, fields  # (scontrol shows StdOut with `%%` as sbatch was given it)
    assert "train exited with 0" in log.read_text()
    assert (root / "sp" / "seed0" / DONE_FILE).is_file()
