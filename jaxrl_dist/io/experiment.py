"""The experiment directory: where a run lives, when it may be reused, and its config snapshot.

Layout of one experiment directory (`experiments/<name>/` by default)::

    config.yaml      # the resolved config of the run (`write_config_snapshot`)
    metrics.jsonl    # one JSON object per line (`MetricsWriter`)
    tb/              # TensorBoard event files
    checkpoints/     # orbax step directories (`Checkpointer`)
    checkpoints_best/  # the checkpoint of the best evaluation so far (one step directory)
    videos/          # evaluation episodes (eval.video)
    export/<step>/   # exported policies (`jaxrl_dist.export`)
    trace_<start>.json  # the profile of a run started with --profile (Chrome trace events, Perfetto)
    jax_profile/     # jax.profiler traces (--jax-profile)
    wandb/           # W&B's files (log.wandb)
    .lock            # held (flock) by the run writing the directory (`ExperimentLock`)

The rules here exist so that a typo on the command line never destroys a finished run: an existing run is
only continued with `--resume` or replaced with `--overwrite`, and a replaced run is deleted only after its
successor's directory exists. And so that two processes never write one experiment (a relaunch while the first
run is still running or pending): the run holds an exclusive `flock` on `<exp_dir>/.lock` (`ExperimentLock`) for
as long as it lives, taken before anything in the directory changes; a second run is refused with the holder's
pid and host.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from jaxrl_dist.errors import UserError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "checkpoints_best"  # the checkpoint with the best evaluation so far (keep 1)
VIDEO_DIR = "videos"  # evaluation episodes (eval.video, evaluate --video)
LOCK_FILE = ".lock"  # flock'ed by the run that writes the experiment; says which process that is
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


def free_experiment_name(root: str | Path, name: str) -> str:
    """`name` if `root/name` holds no previous run, else the first `name-2`, `name-3`, ... that does not (a default
    name that never makes a second run of one config fail).

    Raises:
        UserError: `name` is not allowed (see `resolve_experiment_dir`).
    """
    candidate, n = name, 1
    while (path := resolve_experiment_dir(root, candidate)).is_file() or _is_previous_run(path):
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _is_previous_run(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in _RUN_MARKERS)


def has_checkpoint(path: Path) -> bool:
    """True if `path/checkpoints` holds a finalized orbax step directory.

    Finalized steps are named by their integer step; an interrupted save is still named
    `<step>.orbax-checkpoint-tmp*` and so does not count.
    """
    ckpt_dir = path / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return False
    return any(child.is_dir() and child.name.isdigit() for child in ckpt_dir.iterdir())


class ExperimentLock:
    """An exclusive `fcntl.flock` on `<exp_dir>/.lock` for the life of the process that writes the experiment.

    The kernel releases it when the process ends, however it ends (SIGKILL, a node's crash on a local file system),
    so a stale lock never blocks a requeued run. The file says who holds it (pid, host, since when). On a file system
    without locks, a warning says that a second run would not be stopped.
    """

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def take(self, directory: Path) -> None:
        """Holds the lock of `directory` (which exists), and lets go of one held before (a replaced run's).

        Raises:
            UserError: Another process holds it; the message names it.
        """
        path = Path(directory) / LOCK_FILE
        if self._file is not None and path.exists() and os.path.samestat(os.stat(path), os.fstat(self._file.fileno())):
            return  # held already
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"experiment dir {directory} is in use by another run ({holder}); wait for it to end or "
                            f"stop it, or choose another --exp-name") from None
        except OSError as err:  # e.g. ENOLCK on an NFS mount without lockd
            logger.warning("cannot lock %s (%s): a second run of this experiment would not be refused", path, err)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.release()
        self._file = handle

    def release(self) -> None:
        """Lets go of the lock (the file stays: deleting it would race the next holder)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def prepare_experiment_dir(path: Path, *, resume: bool, overwrite: bool, lock: ExperimentLock | None = None
                           ) -> Path:
    """Makes `path` ready for a run: a new one, a resumed one, or a replacement of an old one.

    Every check happens before anything on disk changes, so nothing is changed when this raises.

    Args:
        path: The experiment directory (from `resolve_experiment_dir`).
        resume: Continue the run in `path`. One without a finished checkpoint (never started, or killed during its
            first save) is started afresh in the same directory; `has_checkpoint` tells the caller which it is.
        overwrite: Replace the run in `path`. The old directory is renamed to a hidden sibling
            `.<name>.old-<timestamp>` (an atomic rename), the new directory is created, and only then is the old
            one deleted; a crash in between leaves the old data in the sibling, never nothing.
        lock: Taken on the directory before anything in it changes, and kept (on the new directory of a replaced
            run); None takes none.

    Returns:
        `path`, which exists when this returns.

    Raises:
        UserError: Both flags given; `path` holds a previous run and neither flag was given; `path` exists but is
            not a directory; another process holds `lock`; the directory cannot be created (a permission, a file
            in the way).
    """
    path = Path(path)
    if resume and overwrite:
        raise UserError(f"--resume and --overwrite exclude each other (experiment dir {path}); pass one of them")
    if path.exists() and not path.is_dir():
        raise UserError(f"experiment dir {path} exists and is not a directory; choose another --exp-name")
    if _is_previous_run(path) and not (resume or overwrite):
        raise _exists(path)
    try:
        if resume or not _is_previous_run(path):
            path.mkdir(parents=True, exist_ok=True)  # a new run; a directory without run markers is reused as is
            _take(lock, path)
            if not resume and _is_previous_run(path):  # another launch started a run here meanwhile
                if lock is not None:
                    lock.release()
                raise _exists(path)
            return path
        _take(lock, path)  # refuses to replace a run that is still running
        _replace_dir(path, lock)
    except OSError as err:
        raise UserError(f"experiment dir {path} cannot be written: {err.strerror or err} "
                        f"({err.filename or path}); check log.root and its permissions") from None
    return path


def _take(lock: ExperimentLock | None, path: Path) -> None:
    if lock is not None:
        lock.take(path)


def _exists(path: Path) -> UserError:
    return UserError(f"experiment dir {path} exists; pass --resume to continue it or --overwrite to replace it, "
                     "or choose another --exp-name")


def _replace_dir(path: Path, lock: ExperimentLock | None) -> None:
    """Swaps `path` for an empty directory, deleting the old contents only once the new directory exists (and, with
    `lock`, is locked)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f".{path.name}.old-{stamp}-{os.getpid()}")
    os.rename(path, aside)  # atomic on one file system; a sibling is always on the same one
    try:
        path.mkdir()
    except BaseException:
        os.rename(aside, path)  # put the old run back rather than leave the user with neither
        raise
    try:
        _take(lock, path)
    except UserError as err:  # another launch took the new directory in between: its run, our old one aside
        raise UserError(f"{err} (the run it was to replace is kept in {aside})") from None
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

    Raises:
        UserError: The file cannot be written (a full disk, a permission).
    """
    text = yaml.safe_dump(_plain(config_dict), sort_keys=False, default_flow_style=False, allow_unicode=True)
    try:
        _write_atomically(Path(path), text)
    except OSError as err:
        raise UserError(f"{Path(path) / CONFIG_FILE} cannot be written: {err.strerror or err}") from None


def _write_atomically(path: Path, text: str) -> None:
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
