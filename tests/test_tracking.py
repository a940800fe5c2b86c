"""Experiment tracking (jaxrl_dist.io.tracking): the MetricsWriter hook with a fake tracker, the `log.wandb` settings,
the missing-extra error, and real W&B runs in offline mode (no network), read back from their transaction logs."""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxrl_dist.errors import ConfigError
from jaxrl_dist.io.metrics import MetricsWriter, read_metrics
from jaxrl_dist.io.tracking import INSTALL_HINT, WandbSettings, WandbTracker, check_tracking, open_tracker

CONFIG = {"algo": {"name": "dqn", "lr": 0.001}, "train": {"seed": 3}}


class FakeTracker:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.videos: list[tuple[Path, int]] = []
        self.closed = 0

    @property
    def run_id(self) -> str | None:
        return "fake"

    def log(self, env_steps: int, metrics: Any) -> None:
        self.logged.append((env_steps, dict(metrics)))

    def log_video(self, path: Path, env_steps: int) -> None:
        self.videos.append((path, env_steps))

    def close(self) -> None:
        self.closed += 1


def test_metrics_writer_forwards_numeric_metrics_videos_and_close(tmp_path: Path) -> None:
    tracker = FakeTracker()
    with MetricsWriter(tmp_path, tensorboard=False, start_time=time.time(), tracker=tracker) as writer:
        writer.write(100, {"train/loss": np.float32(0.5), "note": "warm-up", "eval/episode_return": float("nan"),
                           "updates": 7, "missing": None})
        writer.log_video(tmp_path / "eval_100.mp4", 100)
    writer.close()
    (steps, metrics), = tracker.logged
    assert steps == 100 and set(metrics) == {"train/loss", "eval/episode_return", "updates"}  # no strings, no None
    assert metrics["train/loss"] == 0.5 and metrics["updates"] == 7 and math.isnan(metrics["eval/episode_return"])
    assert tracker.videos == [(tmp_path / "eval_100.mp4", 100)] and tracker.closed == 1
    writer.log_video(tmp_path / "late.mp4", 200)  # after close: dropped, not raised
    assert len(tracker.videos) == 1 and read_metrics(tmp_path)[0]["eval/episode_return"] is None


def test_settings_name_the_bad_key() -> None:
    assert WandbSettings.from_mapping({}) == WandbSettings()
    s = WandbSettings.from_mapping({"project": "p", "tags": ["a", "b"], "mode": "offline", "group": None})
    assert s.tags == ("a", "b") and s.mode == "offline" and s.group is None
    for bad, says in (({"projekt": "p"}, r"log\.wandb\.projekt is not a key .* allowed: project, entity"),
                      ({"mode": "cloud"}, "log.wandb.mode must be one of online, offline, disabled"),
                      ({"tags": "a"}, "log.wandb.tags must be a list of strings"),
                      ({"project": 3}, "log.wandb.project must be a string"),
                      ({"project": ""}, "must not be empty"), ("offline", "must be a mapping")):
        with pytest.raises(ConfigError, match=says):
            WandbSettings.from_mapping(bad)  # type: ignore[arg-type]


def test_missing_extra_is_one_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    assert open_tracker(CONFIG, None, tmp_path) is None
    assert open_tracker(CONFIG, {"mode": "disabled"}, tmp_path) is None  # disabled: wandb is not even imported
    check_tracking(None)
    check_tracking({"mode": "disabled"})
    with pytest.raises(ConfigError) as err:
        open_tracker(CONFIG, {"project": "p"}, tmp_path)
    assert INSTALL_HINT in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else "found")
    with pytest.raises(ConfigError, match="pip install 'jaxrl_dist\\[wandb\\]'"):
        check_tracking({})  # before a run builds anything
    with pytest.raises(ConfigError, match="log.wandb.mode"):
        check_tracking({"mode": "on"})
    assert INSTALL_HINT == "pip install 'jaxrl_dist[wandb]'"


# ------------------------------------------------------------------------------------------------ W&B, offline


def wandb_records(path: Path) -> list[Any]:
    """The records of a W&B transaction log (`run-<id>.wandb`), as `wandb sync` reads them.

    The file is a LevelDB-style log: a 7-byte header (`:W&B`, magic 0xBEE1, version), then 32 KiB blocks of chunks,
    each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece of one serialized
    `wandb_internal_pb2.Record`. A block's tail shorter than a chunk header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    records, pos, pieces = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # padding up to the next block
            pos += left
            continue
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def finished_records(path: Path, timeout_s: float = 60.0) -> list[Any]:
    """`wandb_records` once the log holds its run's `exit` record: `run.finish()` can return before W&B's service
    has written the log out (it does by the time the process exits)."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records = wandb_records(path)
        except (DecodeError, struct.error):  # a header or record cut mid-write does not parse yet
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def offline_runs(exp_dir: Path) -> list[Path]:
    return sorted((exp_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def history(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    return rows


@pytest.fixture
def wandb_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))  # nothing of the user's is touched
    monkeypatch.setenv("WANDB_SILENT", "true")


SETTINGS = {"project": "jaxrl-tests", "group": "sweep", "tags": ["ci", "dqn"], "mode": "offline"}


@pytest.mark.timeout(300)
def test_offline_run_records_config_metrics_and_video(wandb_offline: None, tmp_path: Path) -> None:
    from PIL import Image

    exp = tmp_path / "exp"
    exp.mkdir()
    tracker = open_tracker(CONFIG, SETTINGS, exp)
    assert isinstance(tracker, WandbTracker) and tracker.run_id
    with MetricsWriter(exp, tensorboard=False, start_time=time.time(), tracker=tracker) as writer:
        writer.write(1000, {"train/loss": 0.5, "note": "text stays in metrics.jsonl"})
        writer.write(2000, {"train/loss": 0.25, "eval/episode_return": 42.0})
        writer.write(1500, {"eval/episode_return": 40.0})  # an async eval line behind the last: still recorded
        gif = tmp_path / "eval_2000.gif"
        frames = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(3)]
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
        writer.log_video(gif, 2000)
    (log,) = offline_runs(exp)
    assert log.name == f"run-{tracker.run_id}.wandb"
    records = finished_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") == 1, f"{log}: {kinds}"
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.project, run.run_group, list(run.tags)) == (tracker.run_id, "jaxrl-tests", "sweep",
                                                                         ["ci", "dqn"])
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["algo"] == CONFIG["algo"] and config["train"] == CONFIG["train"]
    rows = history(records)
    points = [(h["env_steps"], h.get("train/loss"), h.get("eval/episode_return")) for h in rows[:3]]
    assert points == [(1000, 0.5, None), (2000, 0.25, 42.0), (1500, None, 40.0)]
    assert not any("note" in h for h in rows)
    assert rows[3]["env_steps"] == 2000 and rows[3]["eval/video/_type"] == "video-file"
    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "*" and m.step_metric == "env_steps" for m in metrics)


@pytest.mark.timeout(300)
def test_resume_with_the_run_id_continues_the_same_run(wandb_offline: None, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    first = WandbTracker(CONFIG, SETTINGS, exp)
    first.log(1000, {"train/loss": 1.0})
    first.close()
    first.close()  # twice is fine
    run_id = first.run_id  # what the checkpoint keeps
    time.sleep(1.0)  # a run's folder is named to the second: a real resume comes later than this
    second = WandbTracker(CONFIG, SETTINGS, exp, run_id=run_id)  # the resumed (or requeued) process
    assert second.run_id == run_id
    second.log(2000, {"train/loss": 0.5})
    second.close()
    logs = offline_runs(exp)
    assert [p.name for p in logs] == [f"run-{run_id}.wandb"] * 2  # `wandb sync` uploads both into run `run_id`
    records = [finished_records(p) for p in logs]
    runs = [next(r.run for r in rs if r.WhichOneof("record_type") == "run") for rs in records]
    assert [(r.run_id, r.resume) for r in runs] == [(run_id, True)] * 2
    assert [[h["env_steps"] for h in history(rs)] for rs in records] == [[1000], [2000]]
    fresh = WandbTracker(CONFIG, SETTINGS, exp)  # without the id: a new run
    fresh.close()
    assert fresh.run_id != run_id


@pytest.mark.timeout(120)
def test_online_without_login_is_one_user_error(wandb_offline: None, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from jaxrl_dist.errors import UserError

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(UserError, match=r"^W&B did not start: .*wandb login.*mode=offline") as err:
        WandbTracker(CONFIG, {"project": "p", "mode": "online"}, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.timeout(600)
def test_train_and_resume_continue_one_wandb_run(wandb_offline: None, tmp_path: Path) -> None:
    """`train` with `log.wandb` in offline mode records the config, the metrics and the evaluation video; the run id
    goes into the checkpoint, and `train --resume` continues that W&B run."""
    import os

    from cli_runs import train

    from jaxrl_dist.io import Checkpointer

    env = dict(os.environ)
    sets = ("roles.mode=serial", "train.total_env_steps=3000", "train.learning_starts=500", "eval.interval=1500",
            "eval.episodes=1", "eval.target_return=null", "eval.video=true", "eval.video_fps=50",
            "log.wandb={project: jaxrl-tests, mode: offline, tags: [ci]}")
    first = train(tmp_path, "tracked", *sets, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "tracked"
    (log,) = offline_runs(exp)
    run_id = log.name[len("run-"):-len(".wandb")]
    with Checkpointer(exp / "checkpoints") as ckpt:
        assert ckpt.read_meta()["wandb_run_id"] == run_id
    records = finished_records(log)
    rows = history(records)
    assert any("train/loss" in h for h in rows) and any("eval/episode_return" in h for h in rows)
    assert any(h.get("eval/video/_type") == "video-file" for h in rows), rows
    time.sleep(1.0)  # offline run folders are named to the second
    second = train(tmp_path, "tracked", *sets, "train.total_env_steps=4500", extra=("--resume",), env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    logs = offline_runs(exp)
    assert [p.name for p in logs] == [log.name] * 2, logs
    resumed = next(r.run for r in finished_records(logs[1]) if r.WhichOneof("record_type") == "run")
    assert (resumed.run_id, resumed.resume) == (run_id, True)
    assert max(h["env_steps"] for h in history(finished_records(logs[1]))) >= 4500
