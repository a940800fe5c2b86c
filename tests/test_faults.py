"""Faults and hostile input (issue 17), met as a user meets them: signals late in a run and during a long XLA call,
two trainers in one experiment, a requeue after a kill during the first save, failing evaluators, the budget's last
checkpoint, damaged checkpoints and configs, and a SIGKILL battery (`python -m jaxrl_dist.bench faults`).

The misbehaving envs are `FaultEnv`s of this module (runs get it on PYTHONPATH): countdown episodes whose evaluation
instances (first reset seed >= `EVAL_SEED`) or training instances fail, stall or compile on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runs import ROOT, command, run, train_cmd, with_env

from jaxrl_dist.config import load_config
from jaxrl_dist.envs.base import BaseEnv, Box, Discrete
from jaxrl_dist.errors import ConfigError, UserError
from jaxrl_dist.io import Checkpointer, read_metrics
from jaxrl_dist.io.checkpoint import CheckpointMeta
from jaxrl_dist.roles.lifetime import Timers

TESTS = Path(__file__).resolve().parent


KILLS = ("sigterm", "ctrl_c", "stop_while", "lock", "second_trainer", "unfinished", "requeued", "sigkill")


@pytest.fixture(autouse=True)
def no_shared_compile_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that are killed or stopped at any moment (also while they write a compilation cache entry) keep out of
    the session's cache (tests/conftest.py), whose other users would then read a cut entry."""
    if any(word in request.node.name for word in KILLS):
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
EVAL_SEED = 900_000  # eval.env_seed of the runs below: an instance whose first reset seed is at least this evaluates
FAULT_ENV = "test_faults:FaultEnv"


class FaultEnv(BaseEnv):
    """Countdown episodes of `length` steps (reward 1 on the last), whose instances misbehave on purpose.

    Args:
        length: steps per episode.
        eval_fault: what evaluation instances do in `step`: "" nothing, "raise" raise, "slow" sleep `delay` seconds.
        delay: seconds per step of a "slow" evaluation instance.
        marker: a file touched when an evaluation instance resets, or when a training instance starts compiling.
        compile_after: a training instance compiles a large XLA program in its `step` number `compile_after`
            (0: never); its actor thread is then inside XLA for minutes.
    """

    observation_space = Box(0.0, 1.0, shape=(2,))
    action_space = Discrete(2)

    def __init__(self, length: int = 5, eval_fault: str = "", delay: float = 0.0, marker: str = "",
                 compile_after: int = 0) -> None:
        self.length, self.eval_fault, self.delay, self.marker = length, eval_fault, delay, marker
        self.compile_after, self.steps, self.t, self.evaluates = compile_after, 0, 0, False

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.evaluates = seed >= EVAL_SEED
        if self.evaluates and self.marker:
            Path(self.marker).touch()
        self.t = 0
        return np.zeros(2, np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self.t, self.steps = self.t + 1, self.steps + 1
        if self.evaluates and self.eval_fault == "raise":
            raise RuntimeError("FaultEnv: an evaluation env failed on purpose")
        if self.evaluates and self.eval_fault == "slow":
            time.sleep(self.delay)
        if not self.evaluates and self.steps == self.compile_after:
            Path(self.marker).touch()
            _long_compile()
        done = self.t >= self.length
        return np.full(2, self.t / self.length, np.float32), float(done), done, False


def _long_compile() -> None:
    """Compiles (and runs) a program of thousands of unrolled ops: minutes of XLA compilation on a CPU."""
    import jax
    import jax.numpy as jnp

    def program(x: Any) -> Any:
        for i in range(4000):
            x = jnp.tanh(x @ x + i) * jnp.sin(x)
        return x

    jax.block_until_ready(jax.jit(program)(jnp.ones((64, 64))))


def fault_env() -> dict[str, str]:
    """The environment of a run that imports this module's envs."""
    return with_env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def fault_run(root: Path, name: str, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    """A serial run of `FaultEnv` (a few seconds), evaluation envs seeded from `EVAL_SEED`."""
    return train_cmd(root, name, f"env.id={FAULT_ENV}", "env.num_envs=4", "train.learning_starts=200",
                     "replay.capacity=2000", "eval.episodes=2", f"eval.env_seed={EVAL_SEED}", "eval.target_return=null",
                     "network.hidden=[16]", *sets, extra=extra)


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def signal_when(cmd: list[str], marker: Path, what: str, settle: float) -> tuple[int, str, str, float]:
    """Starts `cmd` (with this module's envs), sends SIGTERM `settle` seconds after `marker` appears; returns the exit
    code, stdout, stderr and the seconds from the signal to the exit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=fault_env())
    try:
        wait_for(marker.exists, 240, what, proc)
        time.sleep(settle)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err, time.monotonic() - start
    finally:
        proc.kill()


def one_line_error(proc: subprocess.CompletedProcess, *says: str) -> None:
    """Exit 2, one `error: ...` line on stderr that says each of `says`, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err[-3000:]
    for text in says:
        assert text in err, err


# ------------------------------------------------------------------------------------------- signals late in a run


def test_sigterm_during_the_final_evaluation_saves_and_exits_143(tmp_path: Path) -> None:
    """The final evaluation (slow envs) is where Slurm's signal lands: checkpoint, 128 + 15, the resume line."""
    marker = tmp_path / "final_eval_started"
    cmd = fault_run(tmp_path, "late", "roles.mode=serial", "train.total_env_steps=1500", "eval.interval=100000",
                    f"env.kwargs={{eval_fault: slow, delay: 0.5, marker: '{marker}'}}", "checkpoint.interval=0")
    code, out, err, _ = signal_when(cmd, marker, "the final evaluation", settle=0.5)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "checkpoint saved; continue with:" in out and "Traceback" not in err, out + err
    with Checkpointer(tmp_path / "late" / "checkpoints") as ckpt:
        assert ckpt.latest_step() is not None and ckpt.latest_step() >= 1500


def test_second_ctrl_c_during_the_save_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C, then Ctrl-C again while the checkpoint is written: the save completes, the run reports the signal."""
    from jaxrl_dist.config import build
    from jaxrl_dist.io import checkpoint as checkpoint_module
    from jaxrl_dist.roles.graph import build_graph
    from jaxrl_dist.roles.runner import run_graph

    cfg = build({"env": {"id": "jaxrl_dist.envs.fake:CountdownEnv", "num_envs": 2}, "network": {"hidden": [8]},
                 "replay": {"capacity": 500, "batch_size": 8}, "roles": {"mode": "serial"},
                 "train": {"total_env_steps": 400, "learning_starts": 50}, "eval": {"interval": 0},
                 "log": {"tensorboard": False, "quiet": True}, "checkpoint": {"interval": 0}})
    real_save = checkpoint_module.Checkpointer.save
    seen: list[int] = []

    def save_under_fire(self: Any, step: int, *args: Any, **kwargs: Any) -> bool:
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, twice, while the checkpoint is written
        os.kill(os.getpid(), signal.SIGINT)
        saved = real_save(self, step, *args, **kwargs)
        seen.append(step)
        return saved

    monkeypatch.setattr(checkpoint_module.Checkpointer, "save", save_under_fire)
    result = run_graph(build_graph(cfg), tmp_path, time.time())
    assert result.signal == signal.SIGINT and seen
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == seen[-1] == result.env_steps


def test_stop_while_a_role_compiles_exits_143_without_abort(tmp_path: Path) -> None:
    """SIGTERM while the actor's thread is inside a minutes-long XLA compilation: the run says what it waits for,
    saves the last learner state, and exits with 128 + 15 (no C++ abort at interpreter exit)."""
    marker = tmp_path / "compiling"
    cmd = fault_run(tmp_path, "xla", "roles.mode=async", "train.total_env_steps=100000", "eval.interval=0",
                    f"env.kwargs={{compile_after: 400, marker: '{marker}'}}", "checkpoint.interval=0")
    code, out, err, took = signal_when(cmd, marker, "the env's compilation", settle=1.0)
    text = out + err
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "terminate called" not in text and "FATAL" not in text, text[-3000:]
    assert "waiting" in text and "actor0" in text and "checkpoint saved" in text, text[-3000:]
    assert took < 60, took
    with Checkpointer(tmp_path / "xla" / "checkpoints") as ckpt:
        assert ckpt.latest_step() is not None


# --------------------------------------------------------------------------------------- two trainers, one experiment


def test_experiment_lock_names_its_holder(tmp_path: Path) -> None:
    from jaxrl_dist.io.experiment import ExperimentLock, prepare_experiment_dir

    path = tmp_path / "run"
    first = ExperimentLock()
    prepare_experiment_dir(path, resume=False, overwrite=False, lock=first)
    (path / "config.yaml").write_text("a: 1\n")
    for resume, overwrite in ((True, False), (False, True)):
        with pytest.raises(UserError, match=rf"in use by .*pid {os.getpid()} on {os.uname().nodename}"):
            prepare_experiment_dir(path, resume=resume, overwrite=overwrite, lock=ExperimentLock())
    assert (path / "config.yaml").read_text() == "a: 1\n"  # the refused --overwrite changed nothing
    first.release()
    second = ExperimentLock()
    prepare_experiment_dir(path, resume=False, overwrite=True, lock=second)  # free again: replaced
    assert not (path / "config.yaml").exists()
    second.release()


def test_second_trainer_in_one_experiment_is_refused(tmp_path: Path) -> None:
    sets = ("eval.interval=0", "train.total_env_steps=1000000", "checkpoint.interval=0")
    proc = subprocess.Popen(train_cmd(tmp_path, "two", *sets), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        wait_for(lambda: (tmp_path / "two" / "metrics.jsonl").exists(), 240, "the first run's metrics", proc)
        for flag in ("--resume", "--overwrite"):
            second = run(train_cmd(tmp_path, "two", *sets, extra=(flag,)), timeout=240)
            one_line_error(second, "in use", f"pid {proc.pid}")
        assert proc.poll() is None  # the first run goes on, its directory intact
        assert (tmp_path / "two" / "config.yaml").is_file()
    finally:
        proc.kill()
        proc.communicate()


# ------------------------------------------------------------------------------ resume without a finished checkpoint


def test_resume_with_only_an_unfinished_checkpoint_starts_fresh(tmp_path: Path) -> None:
    """A kill during the first save leaves only orbax's temporary directory: --resume (which the Slurm script
    passes) starts the run afresh, saying so in one line, instead of failing the task for good."""
    sets = ("eval.interval=0", "train.total_env_steps=1500", "checkpoint.interval=0", "roles.mode=serial")
    first = run(train_cmd(tmp_path, "fresh", *sets), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = tmp_path / "fresh" / "checkpoints"
    for step in ckpts.iterdir():  # what a SIGKILL during the first save leaves
        step.rename(ckpts / f"{step.name}.orbax-checkpoint-tmp-1712345678")
    proc = run(train_cmd(tmp_path, "fresh", *sets, extra=("--resume",)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in (proc.stdout + proc.stderr).splitlines() if "no finished checkpoint" in line]
    assert len(notes) == 1 and "fresh" in notes[0], proc.stdout + proc.stderr
    with Checkpointer(ckpts) as ckpt:
        assert ckpt.latest_step() is not None and ckpt.latest_step() >= 1500
    assert sorted(p.name for p in ckpts.iterdir()) == [str(ckpt.latest_step())]  # the stale tmp dir is gone
    missing = run(train_cmd(tmp_path, "never_started", *sets, extra=("--resume",)), timeout=300)
    assert missing.returncode == 0 and "no finished checkpoint" in missing.stdout + missing.stderr, missing.stderr


def test_requeued_slurm_task_with_only_a_tmp_checkpoint_trains(slurm_cluster: Path, tmp_path: Path) -> None:
    """The Slurm script passes --resume when checkpoints/ is not empty: a temporary directory alone must not fail the
    task."""
    from test_slurm import TINY, launch, submitted_job
    from slurm_cluster import wait_job

    run_dir = tmp_path / "rq" / "seed0"
    (run_dir / "checkpoints" / "1000.orbax-checkpoint-tmp-1712345678" / "state").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"env_steps": 900, "wall_s": 1.0, "time": 1.0}\n')
    job = submitted_job(launch(tmp_path, "rq", "--seeds", "0", sets=TINY))
    assert wait_job(job, timeout=600) == {job: "COMPLETED"}
    assert (run_dir / "slurm_done").is_file()
    assert max(r["env_steps"] for r in read_metrics(run_dir)) >= 3000


# ----------------------------------------------------------------------------------------------- failing evaluators


@pytest.mark.parametrize("mode", ["async", "serial"])
def test_failing_evaluator_warns_and_training_goes_on(tmp_path: Path, mode: str) -> None:
    proc = run(fault_run(tmp_path, "ev", f"roles.mode={mode}", "train.total_env_steps=2000", "eval.interval=500",
                         "env.kwargs={eval_fault: raise}", "checkpoint.interval=0"), timeout=300, env=fault_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "evaluation" in line
                and "failed" in line]
    assert warnings and "failed on purpose" in warnings[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    records = read_metrics(tmp_path / "ev")
    assert max(r.get("eval/failed", 0) for r in records) >= 2
    assert records[-1]["env_steps"] >= 2000
    with Checkpointer(tmp_path / "ev" / "checkpoints") as ckpt:
        assert ckpt.latest_step() is not None and ckpt.latest_step() >= 2000


# ------------------------------------------------------------------------------------- the budget's last checkpoint


def test_budget_end_saves_the_final_state_without_a_warning(tmp_path: Path) -> None:
    """The budget ends on a checkpoint interval (every default CartPole run does): one checkpoint of the final state."""
    proc = run(train_cmd(tmp_path, "end", "train.total_env_steps=3000", "checkpoint.interval=1000",
                         "eval.interval=0", "roles.mode=async"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not saved" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    last = read_metrics(tmp_path / "end")[-1]
    with Checkpointer(tmp_path / "end" / "checkpoints") as ckpt:
        meta = ckpt.read_meta()
    assert meta["counters"]["env_steps"] == last["env_steps"] and meta["counters"]["updates"] == last["updates"]


# -------------------------------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize("version", [True, 0, -1, "1", None])
def test_bad_format_version_is_refused(tmp_path: Path, version: Any) -> None:
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"w": np.ones(2, np.float32)}, {})
    meta_file = next((tmp_path / "1" / "meta").rglob("metadata"))
    raw = json.loads(meta_file.read_text())
    raw["format_version"] = version
    meta_file.write_text(json.dumps(raw))
    with Checkpointer(tmp_path) as ckpt, pytest.raises(UserError, match="format_version"):
        ckpt.read_meta()


GOOD_META = {"config": {}, "env_spec": {}, "algo": "dqn", "actors": 1, "sampler_rng": None, "best_eval": None,
             "counters": {"env_steps": 10, "updates": 2, "group_env_steps": 10}}


@pytest.mark.parametrize("damage", [
    {"counters": None}, {"counters": {"env_steps": "10", "updates": 2}}, {"counters": {"updates": 2}},
    {"actors": True}, {"actors": 0}, {"config": []}, {"algo": 3}, {"best_eval": "high"}, {"sampler_rng": [1]},
    {"counters": {"env_steps": 10, "updates": -5}},
])
def test_damaged_meta_fields_are_one_line_errors(damage: dict[str, Any]) -> None:
    raw = {**GOOD_META, **damage}
    with pytest.raises(UserError, match="is damaged") as err:
        CheckpointMeta.parse(raw, "ckpt/10")
    assert "\n" not in str(err.value)


def test_resume_of_damaged_checkpoints_is_one_line_exit_2(tmp_path: Path) -> None:
    """A garbled meta field, then a saved replay whose shapes are not this config's: exit 2, one line, no traceback,
    and nothing broadcast into the replay."""
    import shutil

    sets = ("eval.interval=0", "train.total_env_steps=1200", "checkpoint.interval=0", "roles.mode=serial",
            "checkpoint.save_replay=true", "replay.capacity=2000")
    first = run(train_cmd(tmp_path, "dmg", *sets), timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    step_dir = next(p for p in (tmp_path / "dmg" / "checkpoints").iterdir() if p.name.isdigit())
    backup = tmp_path / "backup"
    shutil.copytree(step_dir, backup)
    meta_file = next((step_dir / "meta").rglob("metadata"))
    raw = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**raw, "sampler_rng": {"bit_generator": "PCG64", "state": "garbled"}}))
    one_line_error(run(train_cmd(tmp_path, "dmg", *sets, extra=("--resume",)), timeout=300), str(step_dir))

    shutil.rmtree(step_dir)
    shutil.copytree(backup, step_dir)
    with Checkpointer(step_dir.parent) as ckpt:  # the same checkpoint with a replay of another shape
        tree, meta, extra = ckpt.restore(target=_state_target(ckpt))
    assert extra is not None
    extra["p0"]["obs"] = extra["p0"]["obs"][:, :1]  # [capacity, 1]: numpy would broadcast it into [capacity, 4]
    shutil.rmtree(step_dir)
    with Checkpointer(step_dir.parent) as ckpt:
        assert ckpt.save(int(step_dir.name), tree, meta, extra)
    one_line_error(run(train_cmd(tmp_path, "dmg", *sets, extra=("--resume",)), timeout=300), "replay", "shape")


def _state_target(ckpt: Checkpointer) -> Any:
    """The saved state's own structure (restore it as it is)."""
    from jaxrl_dist.io.policy import _restore

    tree, *_ = _restore(ckpt.directory, None)
    return tree


# ------------------------------------------------------------------------------------------------ hostile configs


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="roles.groups.timeout_s"):
        load_config(str(ROOT / "configs" / "dqn_cartpole.yaml"), [f"roles.groups.timeout_s={value}"])


def test_unwritable_experiment_root_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = run(train_cmd(blocker / "sub", "x", "train.total_env_steps=3000"), timeout=240)
    one_line_error(proc, str(blocker))


def test_timers_snapshot_loses_no_concurrent_addition() -> None:
    """Spans added by a role while the driver takes the timers' sums are counted once, in one snapshot or the next."""
    timers, adds, counted = Timers(), 100_000, 0
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race window is a few bytecodes
    try:
        def add() -> None:
            for _ in range(adds):
                with timers.span("x"):
                    pass

        thread = threading.Thread(target=add)
        thread.start()
        while thread.is_alive():
            counted += timers.take().get("x", (0.0, 0))[1]
        thread.join()
        counted += timers.take().get("x", (0.0, 0))[1]
    finally:
        sys.setswitchinterval(old)
    assert counted == adds


def test_envs_are_closed_when_the_graph_fails_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while the roles are wired (after the training envs exist) closes the envs it made: EnvPool threads
    and `env.vector: subprocess` workers would otherwise outlive the failed run."""
    import jaxrl_dist.roles.graph as graph_module

    closed: list[int] = []
    made: list[Any] = []
    real_make = graph_module.make_env

    def spy_make(**kwargs: Any) -> Any:
        env = real_make(**kwargs)
        real_close = env.close
        env.close = lambda: (closed.append(id(env)), real_close())  # type: ignore[method-assign]
        made.append(env)
        return env

    def failing_path(inputs: Any) -> Any:
        raise RuntimeError("the data path failed on purpose")

    cfg = load_config(ROOT / "configs" / "dqn_cartpole.yaml", ["roles.actor.count=2"])
    setup = graph_module.prepare(cfg)
    monkeypatch.setattr(graph_module, "make_env", spy_make)
    monkeypatch.setattr(graph_module, "make_path", failing_path)
    with pytest.raises(RuntimeError, match="on purpose"):
        graph_module.build_graph(cfg, setup=setup)
    assert len(made) == 2 and sorted(closed) == sorted(id(e) for e in made)


def test_metrics_and_tensorboard_are_closed_after_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jaxrl_dist.config import build
    from jaxrl_dist.io import metrics as metrics_module
    from jaxrl_dist.roles.graph import build_graph
    from jaxrl_dist.roles.runner import run_graph

    closed: list[Path] = []
    real_close = metrics_module.MetricsWriter.close

    def spy_close(self: Any) -> None:
        closed.append(self.path)
        real_close(self)

    monkeypatch.setattr(metrics_module.MetricsWriter, "close", spy_close)
    cfg = build({"env": {"id": "jaxrl_dist.envs.fake:FailingEnv", "num_envs": 2, "kwargs": {"fail_after": 100}},
                 "network": {"hidden": [8]}, "replay": {"capacity": 500, "batch_size": 8},
                 "roles": {"mode": "serial"}, "train": {"total_env_steps": 2000, "learning_starts": 50},
                 "eval": {"interval": 0}, "log": {"tensorboard": True, "quiet": True}, "checkpoint": {"interval": 0}})
    with pytest.raises(RuntimeError, match="failed on purpose"):  # serial mode: the actor's own error
        run_graph(build_graph(cfg), tmp_path, time.time())
    assert closed == [tmp_path / "metrics.jsonl"]


# ------------------------------------------------------------------------------------------ code a checkpoint runs


def test_evaluate_and_export_name_the_modules_they_import(tmp_path: Path) -> None:
    proc = run(train_cmd(tmp_path, "plug", "env.id=jaxrl_dist.envs.fake:CountdownEnv", "env.num_envs=2",
                         "train.total_env_steps=600", "train.learning_starts=200", "eval.interval=0",
                         "roles.mode=serial", "replay.capacity=1000"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = run(command("evaluate", "--experiment", str(tmp_path / "plug"), "--episodes", "1"), timeout=240)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "imports jaxrl_dist.envs.fake (env.id)" in ev.stdout, ev.stdout
    ex = run(command("export", "--experiment", str(tmp_path / "plug"), "--samples", "10"), timeout=300)
    assert ex.returncode == 0, ex.stderr[-3000:]
    assert "imports jaxrl_dist.envs.fake (env.id)" in ex.stdout, ex.stdout


# ------------------------------------------------------------------------------------------------ SIGKILL battery


def test_sigkill_battery(tmp_path: Path) -> None:
    """`python -m jaxrl_dist.bench faults` with 3 kills (docs/reliability.md's figures are of 20): every resume succeeds, at
    most one checkpoint interval is lost per kill, every checkpoint restores, metrics.jsonl parses, the run solves."""
    proc = run(command("bench", "faults", "--kills", "3", "--root", str(tmp_path), "--json"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kills"] == 3 and result["failures"] == [], result
    assert result["solved"] and result["max_lost_env_steps"] <= result["checkpoint_interval"] + 64, result
