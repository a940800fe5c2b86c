"""The subprocess backend's own behaviour (issue 19): how workers fail, time out, close, die with their parent, share
the envs and render. Its step semantics are checked with the inline backend's in tests/test_envs.py."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from typing import Any

import numpy as np
import pytest
from test_envs import run

from jaxrl_dist.bench import throughput
from jaxrl_dist.config import build
from jaxrl_dist.envs import make_env, subproc
from jaxrl_dist.errors import ConfigError
from jaxrl_dist.envs.fake import CountdownEnv
from jaxrl_dist.envs.subproc import EnvWorkerError, RemoteTraceback, SubprocVecEnv

FAKE = "jaxrl_dist.envs.fake"
HERE = "test_envs_subprocess"


def processes(env: Any) -> list[subprocess.Popen]:
    assert isinstance(env, SubprocVecEnv)
    return [w.proc for w in env._workers]


def gone(procs: list[subprocess.Popen], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in procs):
            return True
        time.sleep(0.05)
    return False


class Painted(CountdownEnv):
    """Renders a frame filled with its env's number of steps left."""

    def render(self) -> np.ndarray:
        return np.full((4, 5, 3), self._remaining, np.uint8)


def test_a_crashed_worker_is_one_line_with_its_traceback_and_closes_every_worker() -> None:
    env = make_env(f"{FAKE}:FailingEnv", num_envs=2, kwargs={"fail_after": 3}, vector="subprocess", workers=2)
    procs = processes(env)
    with pytest.raises(EnvWorkerError, match=r"env worker \d \(envs \d\) failed: RuntimeError: FailingEnv failed on "
                                             r"purpose after 3 steps \(.*fake\.py, line \d+\)$") as info:
        run(env, 10)
    assert "\n" not in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "Traceback" in cause.tb and "fake.py" in cause.tb
    assert "FailingEnv failed on purpose" in "".join(traceback.format_exception(info.value))
    assert gone(procs, 1.0)
    with pytest.raises(EnvWorkerError, match="failed"):  # and it stays failed
        env.recv()
    env.close()


def test_a_killed_worker_is_reported_not_waited_for(monkeypatch: Any) -> None:
    monkeypatch.setattr(subproc, "CLOSE_TIMEOUT_S", 0.5)  # worker 0 is inside a long step when the error closes it
    env = make_env(f"{FAKE}:SlowEnv", num_envs=2, kwargs={"step_ms": 20_000, "sleep": True}, vector="subprocess",
                   workers=2)
    env.reset()
    batch = env.recv(timeout=30)
    env.send(np.zeros(2, np.int64), batch.env_ids)
    os.kill(processes(env)[1].pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match=r"env worker 1 \(envs 1\) exited with code -9 without reporting") as info:
        env.recv(timeout=60)
    assert time.monotonic() - start < 10 and "\n" not in str(info.value)
    env.close()


def test_recv_times_out_without_losing_the_batch_and_close_kills_a_hung_worker(monkeypatch: Any) -> None:
    monkeypatch.setattr(subproc, "CLOSE_TIMEOUT_S", 0.5)
    slow = make_env(f"{FAKE}:SlowEnv", num_envs=2, kwargs={"step_ms": 300, "sleep": True}, vector="subprocess")
    slow.reset()
    batch = slow.recv(timeout=30)
    slow.send(np.zeros(2, np.int64), batch.env_ids)
    with pytest.raises(TimeoutError, match=r"recv \(timeout 0.05s\): env worker \d \(envs \d\) did not answer in time"):
        slow.recv(timeout=0.05)
    again = slow.recv(timeout=30)  # the same envs, stepped
    assert again.env_ids.tolist() == [0, 1] and not again.first.any()
    slow.close()

    hung = make_env(f"{FAKE}:SlowEnv", num_envs=1, kwargs={"step_ms": 600_000, "sleep": True}, vector="subprocess")
    procs = processes(hung)
    hung.reset()
    hung.send(np.zeros(1, np.int64), hung.recv(timeout=30).env_ids)
    with pytest.raises(TimeoutError):
        hung.recv(timeout=0.2)
    start = time.monotonic()
    hung.close()
    assert time.monotonic() - start < 5 and gone(procs, 1.0)


def test_workers_exit_when_their_parent_dies_even_inside_a_step(tmp_path: Any) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from jaxrl_dist.envs import make_env
        env = make_env("{FAKE}:SlowEnv", num_envs=2, kwargs={{"step_ms": 600000, "sleep": True}},
                       vector="subprocess", workers=2)
        env.reset()
        env.send(np.zeros(2, np.int64), env.recv(timeout=30).env_ids)
        print(*[w.proc.pid for w in env._workers], flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # an exited child of a dead parent is reaped by init; a zombie is gone
        return f.read().split()[2] != "Z"


def test_signals_that_stop_a_run_are_left_to_the_parent() -> None:
    """A preempted run saves its checkpoint before it closes its envs: SIGTERM, SIGINT and SIGUSR1, which may reach
    every process of the job, must not kill the workers under it."""
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=2, vector="subprocess", workers=2)
    for proc in processes(env):
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            os.kill(proc.pid, signum)
    time.sleep(0.2)
    assert len(run(env, 6)) == 6 and all(p.poll() is None for p in processes(env))
    env.close()


def test_envs_are_shared_round_robin_and_closed_cleanly() -> None:
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=5, vector="subprocess", workers=8)
    procs = processes(env)
    assert len(procs) == 5  # at most one per env
    assert [w.ids for w in env._workers] == [[0], [1], [2], [3], [4]]  # type: ignore[attr-defined]
    env.close()
    env.close()  # twice is fine
    assert [p.returncode for p in procs] == [0] * 5
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
    two = make_env(f"{FAKE}:CountdownEnv", num_envs=5, vector="subprocess", workers=2)
    assert [w.ids for w in two._workers] == [[0, 2, 4], [1, 3]]  # type: ignore[attr-defined]
    two.close()


def test_a_dropped_env_does_not_leave_workers_behind() -> None:
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=2, vector="subprocess", workers=2)
    procs = processes(env)
    del env
    gc.collect()
    assert gone(procs, 2.0)


def test_render_comes_from_the_worker_after_its_pending_steps() -> None:
    env = make_env(f"{HERE}:Painted", num_envs=3, batch_size=3, kwargs={"length": 5}, vector="subprocess", workers=2)
    env.reset()
    batch = env.recv(timeout=30)
    env.send(np.zeros(3, np.int64), batch.env_ids)  # a step in flight in every worker
    frame = env.render(2)  # type: ignore[attr-defined]
    assert frame.shape == (4, 5, 3) and np.all(frame == 4)
    assert env.recv(timeout=30).obs.argmax(axis=1).tolist() == [4, 4, 4]
    env.close()


@pytest.mark.parametrize("vector", ["inline", "subprocess"])
def test_reset_abandons_the_steps_in_flight(vector: str) -> None:
    env = make_env(f"{FAKE}:CountdownEnv", num_envs=4, batch_size=2, vector=vector, workers=2)
    env.reset()
    for _ in range(2):
        batch = env.recv(timeout=30)
        env.send(np.zeros(2, np.int64), batch.env_ids)
    env.reset()
    batches = [env.recv(timeout=30) for _ in range(2)]
    env.close()
    assert [b.env_ids.tolist() for b in batches] == [[0, 1], [2, 3]] and all(b.first.all() for b in batches)


def test_config_keys_and_the_throughput_bench_cover_both_backends() -> None:
    cfg = build({"env": {"id": f"{FAKE}:SlowEnv", "num_envs": 4, "kwargs": {"step_ms": 0.2}, "vector": "subprocess",
                         "workers": 2}})
    assert (cfg.env.vector, cfg.env.workers) == ("subprocess", 2)
    with pytest.raises(ConfigError, match="env.vector"):
        build({"env": {"vector": "threads"}})
    with pytest.raises(ConfigError, match="env.workers"):
        build({"env": {"workers": -1}})
    for vector in ("inline", "subprocess"):
        assert throughput.raw_python(cfg, vector, 0.3) > 100  # 0.2 ms a step: about 5000 a second inline
