"""The evaluator role and offline evaluation: in-run results equal `jaxrl_dist.evaluate` of the same checkpoint;
videos decode to one frame per observation; an env that cannot render only turns videos off."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jaxrl_dist import evaluate
from jaxrl_dist.config import build, plan
from jaxrl_dist.io import read_metrics
from jaxrl_dist.io.video import count_frames
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.runner import run_graph

STATS = [f"eval/episode_{m}{s}" for m in ("return", "length") for s in ("", "_std", "_min", "_max")]


def train(exp: Path, mode: str, steps: int = 6000, env: dict[str, Any] | None = None, **eval_cfg: Any) -> list[dict]:
    """A short CartPole run (in this process); returns its evaluation records."""
    cfg = build({
        "env": {"num_envs": 8, **(env or {})}, "network": {"hidden": [32, 32]}, "roles": {"mode": mode},
        "replay": {"capacity": 10_000},
        "train": {"total_env_steps": steps, "learning_starts": 500, "replay_ratio": 0.25},
        "eval": {"interval": 1000, "episodes": 3, **eval_cfg}, "checkpoint": {"interval": 0},
        "log": {"tensorboard": bool(eval_cfg.get("video")), "quiet": True},
    })
    exp.mkdir(parents=True, exist_ok=True)
    run_graph(build_graph(cfg), exp, time.time())
    return [r for r in read_metrics(exp) if r.get("eval/episode_return") is not None]


def offline(exp: Path, step: str = "latest", **kwargs: Any) -> dict:
    return evaluate.evaluate(evaluate.load(exp, step), log=lambda msg: None, **kwargs)


@pytest.mark.parametrize("mode", ["serial", "async"])
def test_evaluator_results_equal_offline_evaluate(tmp_path: Path, mode: str) -> None:
    records = train(tmp_path, mode)
    assert len(records) >= 2 and all(r["eval/updates"] >= 0 for r in records)
    # The final checkpoint holds the state of the last evaluation (the run's end); `best` the highest mean's.
    last = records[-1]
    latest = offline(tmp_path)
    assert latest["step"] == last["env_steps"]
    assert {k: latest[k] for k in STATS} == {k: last[k] for k in STATS}
    best_record = max(records, key=lambda r: r["eval/episode_return"])  # max() keeps the first of equal means
    best = offline(tmp_path, "best")
    assert best["step"] == best_record["env_steps"]
    assert {k: best[k] for k in STATS} == {k: best_record[k] for k in STATS}
    # Fewer episodes keep the seeds of the first ones (env i: seed + i): the same first episode, hence its bounds.
    one = offline(tmp_path, episodes=1)
    assert last["eval/episode_length_min"] <= one["eval/episode_length"] <= last["eval/episode_length_max"]


def test_video_has_one_frame_per_observation(tmp_path: Path) -> None:
    records = train(tmp_path, "serial", steps=4000, video=True, episodes=2, interval=2000)
    final = records[-1]["env_steps"]
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == sorted(f"eval_{r['env_steps']}.mp4" for r in records)
    # Env 0's episode alone (its seed is the same with one episode): the video has its length + 1 frames.
    solo = offline(tmp_path, episodes=1, video=True)
    length = int(solo["eval/episode_length"])
    assert solo["video"] == str(tmp_path / "videos" / f"offline_{final}.mp4")
    assert count_frames(tmp_path / "videos" / f"offline_{final}.mp4") == length + 1
    assert count_frames(tmp_path / "videos" / f"eval_{final}.mp4") == length + 1
    # Rendering changes nothing: the run's returns are those of an evaluation without video.
    assert {k: offline(tmp_path, episodes=2)[k] for k in STATS} == {k: records[-1][k] for k in STATS}
    tb_videos = [p for p in (tmp_path / "tb").iterdir() if p.name.endswith(".videos")]
    assert len(tb_videos) == 1 and tb_videos[0].read_bytes().count(b"GIF89a") == len(records)  # one GIF per eval


def test_env_that_cannot_render_warns_once_and_trains_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    env = {"id": "jaxrl_dist.envs.fake:CountdownEnv", "num_envs": 4}
    records = train(tmp_path, "serial", steps=3000, env=env, video=True, episodes=2, interval=1000)
    assert len(records) == 3 and all(r["eval/episode_return"] == 1.0 for r in records)
    out = capsys.readouterr().out
    assert out.count("cannot render") == 1 and "eval.video is off" in out, out
    assert not (tmp_path / "videos").exists()


def test_eval_seed_is_fixed_and_not_set_by_global_seed() -> None:
    assert plan(build({"train": {"seed": 3}})).eval_seed == 3 * 10_007 + 1_000_003
    assert plan(build({"train": {"seed": 3}, "eval": {"env_seed": 5}})).eval_seed == 5


def test_evaluate_command_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (["--experiment", str(tmp_path / "missing")], "does not exist"),
        (["--experiment", str(tmp_path), "--episodes", "0"], "--episodes '0' is not allowed"),
        (["--experiment", str(tmp_path), "--step", "best"], "no best checkpoint"),
        (["--experiment", str(tmp_path), "--step", "x"], "--step 'x' is not allowed"),
    ]
    for argv, message in cases:
        assert evaluate.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
