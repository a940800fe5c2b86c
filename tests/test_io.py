"""Tests of jaxrl_dist.io: experiment dirs, metrics, orbax checkpoints on disk, progress output."""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

from jaxrl_dist.errors import UserError
from jaxrl_dist.io import (
    FORMAT_VERSION,
    Checkpointer,
    MetricsWriter,
    Progress,
    prepare_experiment_dir,
    read_metrics,
    resolve_experiment_dir,
    write_config_snapshot,
)
from jaxrl_dist.io import checkpoint as checkpoint_module
from jaxrl_dist.io import experiment as experiment_module
from jaxrl_dist.io.experiment import has_checkpoint
from jaxrl_dist.io.progress import _format_duration

# ---------------------------------------------------------------------------------------------------- experiment dirs


def test_resolve_accepts_nested_names(tmp_path: Path) -> None:
    assert resolve_experiment_dir(tmp_path, "sweep/seed0") == tmp_path.resolve() / "sweep" / "seed0"
    assert resolve_experiment_dir(tmp_path, "lr=3e-4,bs+64_x.y").name == "lr=3e-4,bs+64_x.y"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "name", ["", "/etc/x", "../up", "a/../../b", "a/./b", "a//b", "a/", ".hidden", "a b", "a;b", "a\\b", "ü", "~x"]
)
def test_resolve_rejects_escapes_and_odd_characters(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="experiment name .* is not allowed"):
        resolve_experiment_dir(tmp_path / "experiments", name)
    assert not (tmp_path / "experiments").exists()


def test_new_run_creates_nested_dir(tmp_path: Path) -> None:
    path = resolve_experiment_dir(tmp_path, "sweep/seed0")
    assert prepare_experiment_dir(path, resume=False, overwrite=False) == path
    assert path.is_dir()


def test_dir_without_a_run_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    (path / "slurm.out").write_text("log")
    prepare_experiment_dir(path, resume=False, overwrite=True)
    assert (path / "slurm.out").read_text() == "log"


@pytest.mark.parametrize("marker", ["config.yaml", "metrics.jsonl", "checkpoints"])
def test_existing_run_refused_without_flags(tmp_path: Path, marker: str) -> None:
    path = tmp_path / "run"
    path.mkdir()
    (path / marker).mkdir() if marker == "checkpoints" else (path / marker).write_text("x")
    with pytest.raises(UserError, match="exists; pass --resume .* --overwrite .* --exp-name"):
        prepare_experiment_dir(path, resume=False, overwrite=False)
    assert [p.name for p in path.iterdir()] == [marker]


def _old_run(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yaml").write_text("old: 1\n")
    return path


def test_overwrite_replaces_old_run(tmp_path: Path) -> None:
    path = _old_run(tmp_path)
    prepare_experiment_dir(path, resume=False, overwrite=True)
    assert path.is_dir() and list(path.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the aside copy is gone too


def test_overwrite_deletes_old_data_only_after_new_dir_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _old_run(tmp_path)
    seen: list[tuple[bool, str]] = []
    real_rmtree = shutil.rmtree

    def spy_rmtree(target: Path, *args: Any, **kwargs: Any) -> None:
        seen.append((path.is_dir(), (Path(target) / "config.yaml").read_text()))
        real_rmtree(target, *args, **kwargs)

    monkeypatch.setattr(experiment_module.shutil, "rmtree", spy_rmtree)
    prepare_experiment_dir(path, resume=False, overwrite=True)
    assert seen == [(True, "old: 1\n")]


def test_overwrite_puts_old_run_back_if_new_dir_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _old_run(tmp_path)
    real_mkdir = Path.mkdir

    def failing_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == path:
            raise OSError("disk full")
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", failing_mkdir)
    with pytest.raises(UserError, match="disk full"):  # one line, exit 2
        prepare_experiment_dir(path, resume=False, overwrite=True)
    assert (path / "config.yaml").read_text() == "old: 1\n"


def test_resume_keeps_the_run_and_counts_only_finished_checkpoints(tmp_path: Path) -> None:
    """--resume keeps what the directory holds; without a finished checkpoint the run starts afresh there."""
    path = _old_run(tmp_path)
    assert prepare_experiment_dir(path, resume=True, overwrite=False) == path and not has_checkpoint(path)
    (path / "checkpoints" / "5.orbax-checkpoint-tmp").mkdir()  # an interrupted save does not count
    assert not has_checkpoint(path)
    (path / "checkpoints" / "4").mkdir()
    assert prepare_experiment_dir(path, resume=True, overwrite=False) == path and has_checkpoint(path)
    assert (path / "config.yaml").exists()
    never = tmp_path / "a" / "never_started"  # a requeued task whose first process died before making it
    assert prepare_experiment_dir(never, resume=True, overwrite=False) == never and never.is_dir()


@pytest.mark.parametrize("blocker", ["file", "parent_file"])
def test_nothing_created_on_error(tmp_path: Path, blocker: str) -> None:
    path = tmp_path / "a" / "run"
    with pytest.raises(UserError, match="exclude each other"):
        prepare_experiment_dir(path, resume=True, overwrite=True)
    assert not (tmp_path / "a").exists()
    # A directory that cannot be made is one line naming it, not an OSError's traceback.
    (tmp_path / "a").write_text("a file where a directory should be")
    target = tmp_path / "a" if blocker == "file" else path
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "a"))):
        prepare_experiment_dir(target, resume=False, overwrite=False)


def test_config_snapshot_keeps_key_order(tmp_path: Path) -> None:
    config = {"zeta": 1, "algo": {"name": "dqn", "lr": 3e-4, "hidden": (64, 64)}, "alpha": np.float32(0.5)}
    write_config_snapshot(tmp_path, config)
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text) == {"zeta": 1, "algo": {"name": "dqn", "lr": 3e-4, "hidden": [64, 64]}, "alpha": 0.5}
    assert text.index("zeta") < text.index("algo") < text.index("alpha")
    write_config_snapshot(tmp_path, {"b": 2})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left behind


# ------------------------------------------------------------------------------------------------------------ metrics


def test_metrics_lines_and_tensorboard(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, start_time=0.0)
    record = writer.write(100, {"loss": jnp.float32(0.5), "episodes": np.int64(3), "bad": float("nan"), "ok": True})
    writer.close()
    assert list(record) == ["env_steps", "wall_s", "time", "loss", "episodes", "bad", "ok"]
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line == record
    assert line["env_steps"] == 100 and line["loss"] == 0.5 and line["episodes"] == 3 and line["bad"] is None
    assert isinstance(line["wall_s"], float) and line["wall_s"] > 1e9  # measured from start_time=0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_metrics_append_on_reopen_and_reject_bad_input(tmp_path: Path) -> None:
    for steps in (1, 2):
        with MetricsWriter(tmp_path, tensorboard=False, start_time=0.0) as writer:
            writer.write(steps, {"x": steps})
            with pytest.raises(ValueError, match="reserved"):
                writer.write(steps, {"time": 1.0})
            with pytest.raises(ValueError, match="must be a number"):
                writer.write(steps, {"v": np.zeros(3)})
    assert [r["x"] for r in read_metrics(tmp_path)] == [1, 2]
    assert not (tmp_path / "tb").exists()


def test_read_metrics_tolerates_cut_line_and_resume_after_it(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False, start_time=0.0) as writer:
        writer.write(1, {"x": 1})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"env_steps": 2, "x"')  # a crash mid-line
    assert [r["env_steps"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]
    with MetricsWriter(tmp_path, tensorboard=False, start_time=0.0) as writer:
        writer.write(3, {"x": 3})
    with pytest.warns(UserWarning, match=r"unreadable lines \[2\]"):
        assert [r["env_steps"] for r in read_metrics(tmp_path)] == [1, 3]


def test_metrics_writer_is_thread_safe(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, tensorboard=False, start_time=0.0)

    def role(i: int) -> None:
        for step in range(50):
            writer.write(step, {f"role{i}": float(step), "pad": "x" * 200})

    threads = [threading.Thread(target=role, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert len(read_metrics(tmp_path)) == 200


# -------------------------------------------------------------------------------------------------------- checkpoints


@flax.struct.dataclass
class _State:
    params: dict[str, jax.Array]
    opt_state: optax.OptState
    key: jax.Array
    updates: jax.Array
    env_steps: int


def _make_state(scale: float, key: jax.Array | None = None) -> _State:
    params = {"w": jnp.full((3, 4), scale, jnp.float32), "b": jnp.arange(4, dtype=jnp.float32) * scale}
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    _, opt_state = tx.update(params, opt_state, params)  # non-trivial moments and count
    return _State(params, opt_state, jax.random.PRNGKey(int(scale)) if key is None else key, jnp.int32(7), 123)


def _assert_same(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_EXTRA = {"obs": np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32), "size": np.int64(256)}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _make_state(2.0)
    meta = {"config": {"algo": "dqn", "hidden": [64, 64]}, "env_steps": np.int64(123)}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.save(123, state, meta, extra=_EXTRA)
        assert ckpt.latest_step() == 123 and ckpt.all_steps() == [123]
        target = _make_state(0.0)
        restored, meta_out, extra = ckpt.restore(target=target)
        _assert_same(restored, state)
        assert restored.key.dtype == jnp.uint32 and restored.env_steps == 123
        assert meta_out == {"config": {"algo": "dqn", "hidden": [64, 64]}, "env_steps": 123, "format_version": 1}
        assert ckpt.read_meta() == meta_out
        assert isinstance(extra["obs"], np.ndarray)
        _assert_same(extra, _EXTRA)
        # An abstract target works too (Python-scalar leaves become 0-d arrays then).
        abstract, _, _ = ckpt.restore(123, target=jax.eval_shape(lambda: state))
        np.testing.assert_array_equal(abstract.params["w"], state.params["w"])


def test_checkpoint_typed_prng_key(tmp_path: Path) -> None:
    state = _make_state(1.0, key=jax.random.key(3))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, {})
        restored, _, extra = ckpt.restore(target=state)
    _assert_same(restored, state)
    assert extra is None


def test_checkpoint_keep_steps_and_missing_step(tmp_path: Path) -> None:
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in (1, 2, 3, 4):
            ckpt.save(step, _make_state(float(step)), {"step": step})
        assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
        assert not ckpt.save(4, _make_state(9.0), {})  # not above the latest: skipped
        restored, meta, _ = ckpt.restore(3, target=_make_state(0.0))
        _assert_same(restored, _make_state(3.0))
        assert meta["step"] == 3
        with pytest.raises(UserError, match=r"no checkpoint for step 1 .*available steps: \[3, 4\]"):
            ckpt.restore(1, target=_make_state(0.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]


def test_checkpoint_reading_creates_nothing(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "none")
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    with pytest.raises(UserError, match="no checkpoint in"):
        ckpt.read_meta()
    ckpt.close()
    assert not (tmp_path / "none").exists()


# Orbax's reader may leave a tensorstore callback for its closed asyncio loop after a failed read; Python reports it
# as an unraisable exception at some later garbage collection. It is harmless: the failure itself is our UserError.
_ORBAX_LOOP_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_LOOP_NOISE
def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with Checkpointer(tmp_path, keep=5) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, _make_state(1.0), {}, extra=_EXTRA)
        for data in (tmp_path / "1" / "state" / "d").iterdir():
            data.write_bytes(data.read_bytes()[:5])  # truncated array data
        with pytest.raises(UserError, match=re.escape(str(tmp_path / "1"))):
            ckpt.restore(1, target=_make_state(0.0))
        shutil.rmtree(tmp_path / "2" / "extra" / "d")  # deleted array data of the extra item
        (tmp_path / "2" / "extra" / "manifest.ocdbt").unlink()
        with pytest.raises(UserError, match=re.escape(str(tmp_path / "2"))):
            ckpt.restore(2, target=_make_state(0.0))
        (tmp_path / "3" / "meta" / "metadata").write_text('{"format_')
        with pytest.raises(UserError, match="unreadable"):
            ckpt.read_meta(3)
        with pytest.raises(UserError, match="unreadable"):
            ckpt.restore(3, target=_make_state(0.0))


@_ORBAX_LOOP_NOISE
def test_restore_into_mismatched_target_is_a_user_error(tmp_path: Path) -> None:
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"w": np.ones((3, 4), np.float32)}, {})
        with pytest.raises(UserError, match="does not match the restore target"):
            ckpt.restore(target={"w": np.ones((5, 4), np.float32)})
        with pytest.raises(UserError, match="does not match the restore target"):
            ckpt.restore(target={"w": np.ones((3, 4), np.float32), "v": np.ones(2)})


def test_newer_format_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_module, "FORMAT_VERSION", FORMAT_VERSION + 1)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, _make_state(1.0), {})
    monkeypatch.setattr(checkpoint_module, "FORMAT_VERSION", FORMAT_VERSION)
    with Checkpointer(tmp_path) as ckpt, pytest.raises(UserError, match="format_version 2"):
        ckpt.read_meta()


def test_interrupted_save_is_never_latest(tmp_path: Path) -> None:
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, _make_state(5.0), {})
    # What orbax leaves when a process dies before the final rename: a complete-looking tmp dir, and a partial one.
    shutil.copytree(tmp_path / "5", tmp_path / "9.orbax-checkpoint-tmp")
    (tmp_path / "8.orbax-checkpoint-tmp-1712345678" / "state").mkdir(parents=True)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 5 and ckpt.all_steps() == [5]
        assert ckpt.read_meta()["format_version"] == FORMAT_VERSION
        assert ckpt.save(9, _make_state(9.0), {})  # the stale tmp dir of step 9 does not block it
        assert ckpt.all_steps() == [5, 9]
        _assert_same(ckpt.restore(target=_make_state(0.0))[0], _make_state(9.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5", "9"]


def test_resume_accepts_dir_with_real_checkpoint(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
        ckpt.save(1, _make_state(1.0), {})
    assert prepare_experiment_dir(tmp_path / "run", resume=True, overwrite=False) == tmp_path / "run"


# ----------------------------------------------------------------------------------------------------------- progress


def test_progress_quiet_prints_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(100_000, quiet=True, print_every_s=0.0) as progress:
        progress.update(40_000, sps=25_000.0, ups=800.0, ret=312.5)
        progress.log("evaluating")
        progress.update(50_000, ret=None)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"\[ *\d+\.\ds\] env_steps 40000/100000 \(40%\)  sps 25000  ups 800  return 312\.5  eta 2s", lines[0]
    )
    assert lines[1] == "evaluating"
    assert "env_steps 50000/100000 (50%)  sps 25000  ups 800  eta 2s" in lines[2]  # ret=None hides the field
    assert len(lines) == 4 and "env_steps 50000/100000" in lines[3]  # the final line at exit


def test_progress_not_a_tty_prints_only_when_due(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(10, quiet=False, print_every_s=3600.0) as progress:
        for step in range(11):
            progress.update(step, sps=None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "env_steps 10/10 (100%)" in lines[0] and lines[0].endswith("eta 0s")


def test_progress_live_bar_smoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with Progress(1000, quiet=False) as progress:
        assert progress._rich is not None
        progress.update(500, sps=100.0, ret=1.5)
        progress.log("[not markup] hello")
    assert "[not markup] hello" in capsys.readouterr().out


def test_format_duration() -> None:
    assert [_format_duration(s) for s in (0.4, 42, 303, 7620)] == ["0s", "42s", "5m03s", "2h07m"]
