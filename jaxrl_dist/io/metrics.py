"""Scalar metrics to `metrics.jsonl` (the record of a run), to TensorBoard, and to an optional tracker (W&B).

The JSONL file is the source of truth: one JSON object per line, flushed per line, appended to on resume, so it
can be tailed, grepped, and read back with `read_metrics` even after a crash that cut its last line.
"""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxrl_dist.io.experiment import METRICS_FILE

if TYPE_CHECKING:
    from jaxrl_dist.io.tracking import Tracker

_RESERVED_KEYS = ("env_steps", "wall_s", "time")

Scalar = float | int | bool | str | None


def _to_python(name: str, value: Any) -> Scalar:
    """Converts a metric value to a JSON-able Python scalar; NaN and infinities become None (JSON null).

    Raises:
        ValueError: `value` is not a scalar (an array with more than one element, a dict, ...).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if not isinstance(value, (int, float)):
        # numpy scalars, 0-d / 1-element numpy and jax arrays. np.asarray pulls a jax array to the host.
        array = np.asarray(value)
        if array.size != 1 or array.dtype.kind not in "biuf":
            raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__} {array.shape}")
        value = array.reshape(()).item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends metric records to `exp_dir/metrics.jsonl` and, optionally, TensorBoard scalars to `exp_dir/tb/`.

    Several roles (learner, actors, evaluator) may share one writer: `write` holds a lock, so lines never
    interleave.

    Args:
        exp_dir: The experiment directory (must exist).
        tensorboard: Also write every numeric metric as a TensorBoard scalar at step `env_steps`.
        start_time: The process start as `time.time()`; `wall_s` in each record is measured from it.
        tracker: Also gets the numeric metrics of every record (those TensorBoard gets) and the videos of
            `log_video` (`jaxrl_dist.io.tracking.open_tracker`); the writer closes it.
    """

    def __init__(self, exp_dir: Path, *, tensorboard: bool = True, start_time: float,
                 tracker: Tracker | None = None) -> None:
        self.tracker = tracker
        self.path = Path(exp_dir) / METRICS_FILE
        self._start_time = start_time
        self._lock = threading.Lock()
        self._closed = False
        # A crash can leave the last line without its newline; start on a fresh line so that the first record of
        # the resumed run does not glue onto the broken one.
        needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # append: a resumed run never truncates its history
        if needs_newline:
            self._file.write("\n")
        self._tb: Any = None
        if tensorboard:
            # Imported here so that runs without TensorBoard do not pay for the import.
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(Path(exp_dir) / "tb"), flush_secs=10)

    def write(self, env_steps: int, metrics: Mapping[str, Any]) -> dict[str, Scalar]:
        """Appends one record and returns it.

        Args:
            env_steps: Environment steps so far; the x-axis of every metric.
            metrics: Scalar metrics by name: Python, numpy or jax scalars (converted to Python floats/ints).
                Strings and None are kept in the JSON record but not sent to TensorBoard.

        Returns:
            The record as written: `env_steps`, `wall_s`, `time`, then the metrics in the given order, with NaN and
            infinities as None.

        Raises:
            ValueError: A metric is named like a reserved key (`env_steps`, `wall_s`, `time`) or is not a scalar.
            RuntimeError: The writer was closed.
        """
        now = time.time()
        record: dict[str, Scalar] = {
            "env_steps": int(env_steps),
            "wall_s": round(now - self._start_time, 3),
            "time": round(now, 3),
        }
        tb_scalars: list[tuple[str, float]] = []
        for name, value in metrics.items():
            if name in _RESERVED_KEYS:
                raise ValueError(f"metric name {name!r} is reserved; the record has {', '.join(_RESERVED_KEYS)}")
            plain = _to_python(name, value)
            record[name] = plain
            if isinstance(value, (str, type(None))):
                continue
            # TensorBoard gets non-finite values too (the plot shows a divergence); JSON gets null.
            tb_scalars.append((name, float(plain) if plain is not None else float(np.asarray(value))))
        line = json.dumps(record, allow_nan=False)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"MetricsWriter for {self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()
            if self._tb is not None:
                for name, scalar in tb_scalars:
                    self._tb.add_scalar(name, scalar, global_step=int(env_steps), walltime=now)
            if self.tracker is not None:
                self.tracker.log(int(env_steps), dict(tb_scalars))
        return record

    def log_video(self, path: Path, env_steps: int) -> None:
        """Sends a finished episode video to the tracker, if there is one (TensorBoard gets its own GIF)."""
        with self._lock:
            if self.tracker is not None and not self._closed:
                self.tracker.log_video(path, env_steps)

    def flush(self) -> None:
        """Flushes TensorBoard's buffer (JSONL lines are flushed as they are written)."""
        with self._lock:
            if self._tb is not None and not self._closed:
                self._tb.flush()

    def close(self) -> None:
        """Flushes and closes every output, the tracker too; further `write`s raise. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._file.close()
            if self._tb is not None:
                self._tb.close()
            if self.tracker is not None:
                self.tracker.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Reads the records of a `metrics.jsonl` file.

    A line that does not parse is skipped: silently if it is the last one (a crash cut it short), with a warning
    naming the line numbers otherwise (a cut line followed by the records of a resumed run).

    Args:
        path: The JSONL file, or the experiment directory holding `metrics.jsonl`.

    Returns:
        The records in file order. After a resume, `env_steps` may step back to the restored checkpoint's count.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records: list[dict[str, Any]] = []
    bad_lines: list[int] = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad_lines.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad_lines.append(number)
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    bad_lines = [n for n in bad_lines if n != last]
    if bad_lines:
        warnings.warn(f"{path}: skipped unreadable lines {bad_lines}", stacklevel=2)
    return records
