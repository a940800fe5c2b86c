"""`--profile`: a Chrome trace-event file that Perfetto opens, with a track per role thread."""

from __future__ import annotations

import json
from pathlib import Path

from jaxrl_dist.io.trace import TraceRecorder
from jaxrl_dist.roles.lifetime import Timers

from cli_runs import train


def test_profiled_run_writes_a_trace_of_every_role(tmp_path: Path) -> None:
    proc = train(tmp_path, "p", "train.total_env_steps=4000", "eval.interval=2000", "eval.target_return=null",
                 extra=("--profile",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trace_file,) = (tmp_path / "p").glob("trace_*.json")
    assert f"profile: {trace_file}" in proc.stdout
    doc = json.loads(trace_file.read_text())
    events = doc["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    by_name = {e["name"] for e in spans}
    assert {"actor/recv", "actor/inference", "actor/write", "learner/update", "learner/publish", "replay/sample",
            "replay/h2d", "eval/run"} <= by_name, by_name
    assert {"actor0", "learner", "sampler", "evaluator"} <= set(threads.values()), threads
    learner_tids = {e["tid"] for e in spans if e["name"] == "learner/update"}
    assert len(learner_tids) == 1 and threads[learner_tids.pop()] == "learner"
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)


def test_timers_without_trace_keep_only_sums() -> None:
    timers = Timers()
    with timers.span("a/b"):
        pass
    assert timers.trace is None and timers.count["a/b"] == 1
    traced = Timers(TraceRecorder(max_events=1))
    for _ in range(3):
        with traced.span("a/b"):
            pass
    assert traced.trace is not None and len(traced.trace.events) == 1 and traced.trace.dropped == 2
    assert traced.trace.to_json()["otherData"]["dropped_events"] == 2


def test_jax_profile_window_writes_an_xla_trace(tmp_path: Path) -> None:
    proc = train(tmp_path, "j", "train.total_env_steps=3000", "eval.interval=0", extra=("--jax-profile", "0.5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "jax profile:" in proc.stdout
    assert list((tmp_path / "j" / "jax_profile").rglob("*.trace.json.gz"))
