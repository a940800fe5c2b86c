"""Slurm: sweep expansion (pure), the launch command's script and errors, the report, and job arrays and requeue
on a real single-node cluster (the `slurm_cluster` fixture of tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_runs import DEFAULT, ROOT, command, run
from slurm_cluster import slurm, wait_for, wait_job

from jaxrl_dist import report
from jaxrl_dist.io.metrics import read_metrics
from jaxrl_dist.slurm import DONE_FILE, JobSpec, SweepError, expand, parse_seeds, parse_sweep, render
from jaxrl_dist.slurm.sweep import check_sweeps, split_values

# A run of a few seconds: CartPole, small eval, no TensorBoard.
TINY = ("log.tensorboard=false", "train.total_env_steps=3000", "train.learning_starts=500", "eval.interval=1000",
        "eval.episodes=2", "eval.target_return=null")  # a lucky early solve would end a run before its budget


def launch(root: Path, name: str, *args: str, sets: tuple[str, ...] = TINY) -> subprocess.CompletedProcess:
    """`python -m jaxrl_dist.launch slurm` of the default config into `root/name`."""
    cmd = command("launch", "slurm", "--config", DEFAULT, "--exp-name", name, "--set", f"log.root={root}", *args)
    for s in sets:
        cmd += ["--set", s]
    return run(cmd, timeout=120)


def submitted_job(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("submitted job "), proc.stdout
    return first.split()[2].rstrip(":")


# ------------------------------------------------------------------------------------------------ sweep (pure)


def test_seeds_ranges_and_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7") == [7]
    assert parse_seeds("0-1, 5") == [0, 1, 5]
    for bad, says in (("4-2", "empty"), ("a", "not a seed"), ("1,1", "twice"), ("", "not a seed")):
        with pytest.raises(SweepError, match=says):
            parse_seeds(bad)


def test_sweep_values_keep_yaml_lists_whole():
    assert parse_sweep("algo.lr=1e-3,3e-4").values == ("1e-3", "3e-4")
    assert split_values("[32,32],[64, 64]") == ["[32,32]", "[64, 64]"]
    for bad, says in (("algo.lr", "expected KEY=V1,V2"), ("algo..lr=1", "expected KEY"), ("algo.lr=1,,2", "empty"),
                      ("algo.lr=1,1", "twice")):
        with pytest.raises(SweepError, match=says):
            parse_sweep(bad)


def test_expand_orders_sweep_slowest_and_names_runs():
    combos = expand([0, 1], [parse_sweep("algo.lr=1e-3,3e-4"), parse_sweep("network.hidden=[32,32],[64]")])
    assert [c.index for c in combos] == list(range(8))
    assert combos[0].name == "lr=1e-3_hidden=32-32_seed0"
    assert combos[1].name == "lr=1e-3_hidden=32-32_seed1"
    assert combos[2].overrides == ["algo.lr=1e-3", "network.hidden=[64]"]
    assert combos[-1].sweep_label == "algo.lr=3e-4,network.hidden=[64]"
    assert [c.name for c in expand([3], [])] == ["seed3"]
    with pytest.raises(SweepError, match="same directory name"):
        expand([0], [parse_sweep("network.hidden=[32],(32)")])


def test_sweep_conflicts():
    lr = parse_sweep("algo.lr=1,2")
    with pytest.raises(SweepError, match="given twice"):
        check_sweeps([lr, lr], [])
    with pytest.raises(SweepError, match="also fixed with --set"):
        check_sweeps([lr], ["algo.lr=3"])
    with pytest.raises(SweepError, match="use --seeds"):
        check_sweeps([parse_sweep("train.seed=1,2")], [])


# ------------------------------------------------------------------------------------------------ launch (no cluster)


def test_dry_run_writes_and_prints_the_array_script(tmp_path):
    proc = launch(tmp_path, "sw", "--seeds", "0-1", "--sweep", "algo.lr=1e-3,3e-4", "--time", "00:30:00",
                  "--sbatch-arg=--cpus-per-task=2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "sw" / "slurm" / "job.sbatch").read_text()
    assert proc.stdout.startswith(script)
    for line in ("#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@180", "#SBATCH --time=00:30:00",
                 "#SBATCH --cpus-per-task=2", f"#SBATCH --output={tmp_path}/sw/slurm/%A_%a.out",
                 "  3) RUN=lr=3e-4_seed1; ARGS=(--seed 1 --set algo.lr=3e-4) ;;", "scontrol requeue \"$TASK\""):
        assert line in script
    assert subprocess.run(["bash", "-n"], check=False, input=script, text=True).returncode == 0  # valid bash
    tasks = json.loads((tmp_path / "sw" / "slurm" / "manifest.json").read_text())["tasks"]
    assert [t["name"] for t in tasks] == ["lr=1e-3_seed0", "lr=1e-3_seed1", "lr=3e-4_seed0", "lr=3e-4_seed1"]
    assert not [p for p in (tmp_path / "sw").iterdir() if p.name != "slurm"]  # runs are made by the tasks


def test_dry_run_of_a_group_job_uses_srun(tmp_path):
    proc = launch(tmp_path, "grp", "--groups", "2", "--nodes", "2", "--gpus-per-node", "1", "--partition", "gpu",
                  "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("#SBATCH --nodes=2", "#SBATCH --ntasks=2", "#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu",
                 "srun --mpi=pmi2 --ntasks=2 ", "--set roles.groups.count=2 --exp-name grp/\"$RUN\""):
        assert text in out
    assert "--array" not in out  # one combination: a plain job, its log is %j.out


def test_dry_run_of_a_multi_node_job_uses_jax_distributed(tmp_path):
    proc = launch(tmp_path, "mn", "--nodes", "2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --nodes=2" in proc.stdout and "#SBATCH --ntasks=2" in proc.stdout
    assert "srun --mpi=pmi2 --ntasks=2 " in proc.stdout and " --distributed --exp-name mn/" in proc.stdout
    assert "roles.groups.count" not in proc.stdout


def test_group_job_trains_with_mpi4jax_sync(slurm_cluster, tmp_path):
    """`launch --groups 2`: srun starts 2 MPI ranks that train as groups with gradient all-reduce."""
    pytest.importorskip("mpi4jax", reason="MPI groups need the mpi extra and mpi4jax")
    job = submitted_job(launch(tmp_path, "grp", "--groups", "2", "--seeds", "0", "--set", "roles.groups.sync=grads"))
    states = wait_job(job, timeout=600)
    assert list(states.values()) == ["COMPLETED"], states
    last = read_metrics(tmp_path / "grp" / "seed0")[-1]
    log = "".join(p.read_text() for p in (tmp_path / "grp" / "slurm").glob("*.out"))
    assert last["env_steps"] >= 3000 or "solved:" in log  # a lucky greedy policy can end it early
    assert last["groups/identical_state"] == 1.0


def test_processes_job_trains_one_mesh(slurm_cluster, tmp_path):
    """`launch --processes 2`: srun starts 2 processes that find each other through SLURM_* (jax.distributed)."""
    job = submitted_job(launch(tmp_path, "mp", "--processes", "2", "--seeds", "0"))
    states = wait_job(job, timeout=600)
    log = "".join(p.read_text() for p in (tmp_path / "mp" / "slurm").glob("*.out"))
    assert list(states.values()) == ["COMPLETED"], log[-3000:]
    assert "(2 processes)" in log
    last = read_metrics(tmp_path / "mp" / "seed0")[-1]
    assert last["env_steps"] >= 3000 or "solved:" in log  # a lucky greedy policy can end it early
    assert last["groups/identical_state"] == 1.0


@pytest.mark.parametrize("args, says", [
    (("--sweep", "algo.lr"), "--sweep 'algo.lr': expected KEY=V1,V2"),
    (("--sweep", "algo.lrr=1,2"), "algo.lrr"),
    (("--sweep", "algo.lr=1e-3,-1"), "run lr=-1_seed0: "),
    (("--set", "algo.gama=0.9"), "algo.gama"),
    (("--seeds", "3-1"), "--seeds '3-1'"),
    (("--time", "soon"), "--time 'soon'"),
    (("--nodes", "3", "--processes", "2"), "--processes must be at least --nodes"),
    (("--processes", "2", "--groups", "2"), "either MPI groups or one jax.distributed mesh"),
    (("--nodes", "3", "--groups", "2"), "--groups must be at least --nodes"),
    (("--python", "/nonexistent/python"), "--python '/nonexistent/python'"),
    (("--time", "00:02:00", "--signal-margin", "300"), "--signal-margin 300"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, says):
    proc = launch(tmp_path, "bad", *args, "--dry-run")
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------------ report (no cluster)


def _fake_run(path: Path, lr: float, returns: list[float], done: bool, cut: bool = False) -> None:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"algo:\n  lr: {lr}\ntrain:\n  seed: {path.name[-1]}\n")
    lines = [json.dumps({"env_steps": 1000 * (i + 1), "wall_s": 2.0 * (i + 1), "time": 1e9 + 2.0 * (i + 1),
                         "eval/episode_return": r}) for i, r in enumerate(returns)]
    (path / "metrics.jsonl").write_text("\n".join(lines) + ("\n{\"env_st" if cut else "\n"))
    if done:
        (path / DONE_FILE).write_text("")


def test_report_of_a_partial_array(tmp_path, capsys):
    exp = tmp_path / "sw"
    _fake_run(exp / "lr=1_seed0", 1.0, [10, 30, 20], done=True)
    _fake_run(exp / "lr=1_seed1", 1.0, [20, 40], done=False, cut=True)  # still writing its metrics
    _fake_run(exp / "lr=2_seed0", 2.0, [5], done=True)
    assert report.main([str(exp), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["sweep"] for r in rows] == ["algo.lr=1 (2 seeds)", "algo.lr=2"]
    assert rows[0]["final"] == {"mean": 30.0, "std": pytest.approx(200 ** 0.5), "n": 2, "iqm": 30.0,
                                "iqm_ci": [20.0, 40.0]} and rows[0]["best"]["mean"] == 35.0  # std: ddof = 1
    assert rows[0]["states"] == {"done": 1, "running": 1, "missing": 0}
    assert rows[0]["env_steps"]["mean"] == 2500 and rows[0]["sps"] == {"mean": 500.0, "std": 0.0, "n": 2}
    assert (exp / "report" / "eval_episode_return.png").stat().st_size > 0
    assert report.main([str(tmp_path / "nope")]) == 2


# ------------------------------------------------------------------------------------------------ real cluster


def test_array_of_two_seeds_by_two_learning_rates(slurm_cluster, tmp_path):
    job = submitted_job(launch(tmp_path, "arr", "--seeds", "0-1", "--sweep", "algo.lr=1e-3,3e-4"))
    states = wait_job(job, timeout=600)
    assert sorted(states.values()) == ["COMPLETED"] * 4, states
    runs = sorted(p for p in (tmp_path / "arr").iterdir() if p.name != "slurm")
    assert [p.name for p in runs] == ["lr=1e-3_seed0", "lr=1e-3_seed1", "lr=3e-4_seed0", "lr=3e-4_seed1"]
    for r in runs:
        assert (r / DONE_FILE).is_file() and read_metrics(r)[-1]["env_steps"] >= 3000
    assert len(list((tmp_path / "arr" / "slurm").glob(f"{job}_*.out"))) == 4
    proc = run(command("report", str(tmp_path / "arr")), timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.splitlines()
    assert table[2].startswith("algo.lr=1e-3") and table[3].startswith("algo.lr=3e-4") and "2/0/0" in table[3]
    assert (tmp_path / "arr" / "report" / "eval_episode_return.png").stat().st_size > 0


def test_a_job_slurm_refuses_is_one_line(slurm_cluster, tmp_path):
    for args, says in ((("--partition", "nope"), "invalid partition"),
                       (("--sbatch-arg=--cpus-per-task=4096",), "sbatch refused")):
        proc = launch(tmp_path, "refused", *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: sbatch refused "), proc.stderr
        assert says in proc.stderr.lower() and proc.stderr.count("\n") == 1, proc.stderr


def test_usr1_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    # No target return: a run that solves early would end before the budget this test checks.
    sets = ("log.tensorboard=false", "train.total_env_steps=60000", "train.learning_starts=500", "eval.interval=20000",
            "eval.episodes=2", "eval.target_return=null", "log.interval_s=0.5",
            "checkpoint.interval=0", "checkpoint.keep=10")
    job = submitted_job(launch(tmp_path, "pre", "--seeds", "0", sets=sets))
    run_dir = tmp_path / "pre" / "seed0"

    def trained_a_while() -> bool:
        return (run_dir / "metrics.jsonl").is_file() and any(r["env_steps"] >= 2000 for r in read_metrics(run_dir))

    wait_for(trained_a_while, 300, "the run to log 2000 env steps")
    slurm("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@margin does before the time limit
    wait_job(job, timeout=600)
    fields = slurm("scontrol", "show", "job", "-o", job)
    assert "JobState=COMPLETED" in fields and "Restarts=1" in fields, fields
    log = (tmp_path / "pre" / "slurm" / f"{job}.out").read_text()
    assert log.count("checkpoint saved; requeueing") == 1 and "exited with 138" in log, log
    records = read_metrics(run_dir)
    starts = [round(r["time"] - r["wall_s"]) for r in records]  # when the writing process started
    restart = starts.index(starts[-1])  # the first line of the resumed process
    assert restart > 0 and len(set(starts)) == 2, starts
    saved = max(r["env_steps"] for r in records[:restart])  # the interrupted run's count: its last checkpoint
    assert 2000 <= saved < 60000
    assert (run_dir / "checkpoints" / str(saved)).is_dir()
    assert min(r["env_steps"] for r in records[restart:]) >= saved  # resumed from there, nothing trained twice
    assert max(r["env_steps"] for r in records) >= 60000 and (run_dir / DONE_FILE).is_file()

    slurm("scontrol", "requeue", job)  # a finished task that comes back does not train again
    wait_for(lambda: "Restarts=2" in slurm("scontrol", "show", "job", "-o", job), 60, "the second requeue")
    assert wait_job(job, timeout=120) == {job: "COMPLETED"}
    assert "finished before; not training again" in (tmp_path / "pre" / "slurm" / f"{job}.out").read_text()
    assert len(read_metrics(run_dir)) == len(records)


# ------------------------------------------------------------------------------------------------ templates in slurm/

HOME = Path("/home/me/jaxrl_dist")  # where the templates pretend the repository is


def _template_specs() -> dict[str, tuple[JobSpec, str]]:
    """The examples of slurm/README.md: each is what `launch ... --dry-run` writes for that command line."""
    def spec(name: str, combos: list, **kw) -> JobSpec:
        return JobSpec(name=name, exp_dir=HOME / "experiments" / name, config=HOME / "configs" / "dqn_cartpole.yaml",
                       workdir=HOME, python="/home/me/venv/bin/python", combos=tuple(combos), **kw)

    base = "python -m jaxrl_dist.launch slurm --config configs/dqn_cartpole.yaml"
    return {
        "array_sweep.sbatch": (
            spec("lr_sweep", expand([0, 1, 2], [parse_sweep("algo.lr=1e-3,3e-4")]), time="04:00:00"),
            f"{base} --exp-name lr_sweep --seeds 0-2 --sweep algo.lr=1e-3,3e-4 --time 04:00:00"),
        "multi_group.sbatch": (
            spec("groups4", expand([0], []), nodes=2, groups=4, gpus_per_node=2, time="12:00:00"),
            f"{base} --exp-name groups4 --seeds 0 --nodes 2 --groups 4 --gpus-per-node 2 --time 12:00:00"),
        "long_run.sbatch": (
            spec("long", expand([0], []), sets=("train.total_env_steps=50000000",), time="1-00:00:00",
                 signal_margin_s=600, sbatch_args=("--cpus-per-task=16",)),
            (f"{base} --exp-name long --seeds 0 --set train.total_env_steps=50000000 --time 1-00:00:00 "
             f"--signal-margin 600 --sbatch-arg=--cpus-per-task=16")),
    }


@pytest.mark.parametrize("name", sorted(_template_specs()))
def test_templates_match_what_launch_generates(name):
    spec, line = _template_specs()[name]
    assert (ROOT / "slurm" / name).read_text() == render(spec, line), \
        f"slurm/{name} is out of date: regenerate it with `python tests/test_slurm.py`"


if __name__ == "__main__":  # rewrites the templates in slurm/ from the current script generator
    for file, (job, text) in _template_specs().items():
        (ROOT / "slurm" / file).write_text(render(job, text))
        print(f"wrote slurm/{file}")
