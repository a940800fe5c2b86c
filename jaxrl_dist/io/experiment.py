"""The experiment directory: where a run lives, when it may be reused, and its config snapshot.

Layout of one experiment directory (`experiments/<name>/` by default)::

    config.yaml      # the resolved config of the run (`write_config_snapshot`)
    metrics.jsonl    # one JSON object per line (`MetricsWriter`)
    tb/              # TensorBoard event files
    checkpoints/     # orbax step directories (`Checkpointer`)
    checkpoints_best/  # the checkpoint of the best evaluation so far (one step directory)
    videos/          # evaluation episodes (eval.video)
    export/<step>/   # exported policies (`jaxrl_dist.export`)
    trace.json       # the profile of a run started with --profile (Chrome trace events)

The rules here exist so that a typo on the command line never destroys a finished run: an existing run is
only continued with `--resume` or replaced with `--overwrite`, and a replaced run is deleted only after its
successor's directory exists.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxrl_dist.errors import UserError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "checkpoints_best"  # the checkpoint with the best evaluation so far (keep 1)
VIDEO_DIR = "videos"  # evaluation episodes (eval.video, evaluate --video)
# Any of these marks a directory as holding a previous run (a bare directory, e.g. one a Slurm script made for its
# logs, does not).
_RUN_MARKERS = (CONFIG_FILE, CHECKPOINT_DIR, METRICS_FILE)

_NAME_CHARS = re.compile(r"[A-Za-z0-9._=,+\-/]+")
_ALLOWED_NAME = (
    "letters, digits and . _ = , + - /, relative, with non-empty '/'-separated parts that do not start with '.'"
)


def resolve_experiment_dir(root: str | Path, name: str) -> Path:
    """Returns the absolute directory of experiment `name` under `root`, without creating it.

    Args:
        root: The experiments folder (callers pass `experiments`, relative to the working directory, by default).
        name: The experiment name; may contain `/` to nest runs (`sweep/seed0`).

    Returns:
        `root/name` as an absolute path.

    Raises:
        UserError: `name` is empty, absolute, has a `.`/`..`/empty part or a part starting with `.`, or uses a
            character outside `[A-Za-z0-9._=,+-/]`. Parts starting with `.` are refused as well as `..` because
            `prepare_experiment_dir` parks replaced runs in hidden `.<name>.old-*` siblings.
    """
    if not name or not _NAME_CHARS.fullmatch(name):
        raise UserError(f"experiment name {name!r} is not allowed: use {_ALLOWED_NAME}")
    parts = name.split("/")
    if name.startswith("/") or any(not part or part.startswith(".") for part in parts):
        raise UserError(f"experiment name {name!r} is not allowed: use {_ALLOWED_NAME}")
    root_path = Path(root).expanduser().resolve()
    path = root_path.joinpath(*parts)
    # Belt and braces: the checks above already exclude every way out of root.
    if root_path not in path.parents:
        raise UserError(f"experiment name {name!r} leaves the experiments folder {root_path}")
    return path


def _is_previous_run(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in _RUN_MARKERS)


def _has_checkpoint(path: Path) -> bool:
    """True if `path/checkpoints` holds a finalized orbax step directory.

    Finalized steps are named by their integer step; an interrupted save is still named
    `<step>.orbax-checkpoint-tmp*` and so does not count.
    """
    ckpt_dir = path / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return False
    return any(child.is_dir() and child.name.isdigit() for child in ckpt_dir.iterdir())


def prepare_experiment_dir(path: Path, *, resume: bool, overwrite: bool) -> Path:
    """Makes `path` ready for a run: a new one, a resumed one, or a replacement of an old one.

    Every check happens before anything on disk changes, so nothing is created when this raises.

    Args:
        path: The experiment directory (from `resolve_experiment_dir`).
        resume: Continue the run in `path`; it must exist and hold at least one finished checkpoint.
        overwrite: Replace the run in `path`. The old directory is renamed to a hidden sibling
            `.<name>.old-<timestamp>` (an atomic rename), the new directory is created, and only then is the old
            one deleted; a crash in between leaves the old data in the sibling, never nothing.

    Returns:
        `path`, which exists when this returns.

    Raises:
        UserError: Both flags given; `path` holds a previous run and neither flag was given; `resume` without a
            run with checkpoints in `path`; `path` exists but is not a directory.
    """
    path = Path(path)
    if resume and overwrite:
        raise UserError(f"--resume and --overwrite exclude each other (experiment dir {path}); pass one of them")
    if path.exists() and not path.is_dir():
        raise UserError(f"experiment dir {path} exists and is not a directory; choose another --exp-name")
    if resume:
        if not path.is_dir():
            raise UserError(f"cannot resume: experiment dir {path} does not exist; drop --resume to start a new run")
        if not _has_checkpoint(path):
            raise UserError(
                f"cannot resume: experiment dir {path} has no checkpoint in {CHECKPOINT_DIR}/; "
                "pass --overwrite to start it afresh"
            )
        return path
    if _is_previous_run(path):
        if not overwrite:
            raise UserError(
                f"experiment dir {path} exists; pass --resume to continue it or --overwrite to replace it, "
                "or choose another --exp-name"
            )
        _replace_dir(path)
        return path
    # A new run; a directory without run markers (made by a launcher for its logs, say) is reused as is.
    path.mkdir(parents=True, exist_ok=True)
    return path


def _replace_dir(path: Path) -> None:
    """Swaps `path` for an empty directory, deleting the old contents only once the new directory exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f".{path.name}.old-{stamp}-{os.getpid()}")
    os.rename(path, aside)  # atomic on one file system; a sibling is always on the same one
    try:
        path.mkdir()
    except BaseException:
        os.rename(aside, path)  # put the old run back rather than leave the user with neither
        raise
    try:
        shutil.rmtree(aside)
    except OSError as err:  # e.g. a file held open on NFS; the new run can go on regardless
        logger.warning("could not delete the replaced run %s (%s); delete it by hand", aside, err)


def _plain(value: Any) -> Any:
    """Converts a config value into the types YAML's safe dumper knows (tuples, numpy scalars, paths)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_config_snapshot(path: Path, config_dict: dict[str, Any]) -> None:
    """Writes `config_dict` to `path/config.yaml` atomically, keys in the given order.

    The file is written to a temporary file in the same directory and moved into place with `os.replace`, so a
    reader (or a crash) sees either the previous snapshot or the complete new one.

    Args:
        path: The experiment directory (must exist).
        config_dict: Nested dicts, lists/tuples and scalars (numpy scalars and paths are converted).
    """
    text = yaml.safe_dump(_plain(config_dict), sort_keys=False, default_flow_style=False, allow_unicode=True)
    fd, tmp_name = tempfile.mkstemp(dir=path, prefix=f".{CONFIG_FILE}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; a config snapshot is meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, Path(path) / CONFIG_FILE)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
