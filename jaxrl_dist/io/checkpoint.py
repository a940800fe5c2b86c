"""Self-describing checkpoints on disk, written with orbax.

One checkpoint is one step directory under `directory` with three orbax items::

    <directory>/<step>/state/   # the algorithm state pytree (params, optimizer state, RNG key, counters)
    <directory>/<step>/meta/    # JSON: format_version, config, env spec, counters -- enough to rebuild a policy
    <directory>/<step>/extra/   # optional pytree of numpy arrays (a replay buffer snapshot)

Atomicity comes from orbax: a step is written into `<step>.orbax-checkpoint-tmp*` and renamed to `<step>` only
once every item is on disk (`orbax.checkpoint._src.path.atomicity`), and orbax's step listing skips the tmp
names. A crash mid-save therefore leaves a tmp directory that `latest_step()` never returns; it is deleted
before this process's first save. A step directory damaged afterwards (a truncated or deleted file) is
reported by `restore` / `read_meta` as a `UserError` naming it, never loaded half-way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import absl.logging
import jax
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxrl_dist.errors import UserError

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

FORMAT_VERSION = 1

_STATE, _META, _EXTRA = "state", "meta", "extra"
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """What a training checkpoint says about itself, written and parsed here alone (the JSON `meta` item).

    Attributes:
        config: the run's resolved config as plain data (`jaxrl_dist.config.to_dict`).
        env_spec: the env spec as plain data (`EnvSpec.to_dict`).
        algo: `config.algo.name`, for readers that only list checkpoints.
        actors: actor threads, whose RNG keys are saved with the state.
        env_steps: the run's env steps (all groups').
        updates: learner updates done.
        group_env_steps: group 0's own env steps (each group resumes from them); `env_steps` without groups.
        sampler_rng: the replay sampler's generator state, or None.
        best_eval: the best evaluation return so far, or None.
        eval: the evaluation's stats (a checkpoint of the best evaluated state), or None.
        wandb_run_id: the run's W&B run id (`log.wandb`), which `--resume` continues, or None.
    """

    config: dict[str, Any]
    env_spec: dict[str, Any]
    algo: str
    actors: int
    env_steps: int
    updates: int
    group_env_steps: int
    sampler_rng: dict[str, Any] | None = None
    best_eval: float | None = None
    eval: dict[str, float] | None = None
    wandb_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout on disk (the counters nested, as format version 1 has them)."""
        out: dict[str, Any] = {"actors": self.actors, "config": self.config, "env_spec": self.env_spec,
                               "algo": self.algo,
                               "counters": {"env_steps": self.env_steps, "updates": self.updates,
                                            "group_env_steps": self.group_env_steps},
                               "sampler_rng": self.sampler_rng, "best_eval": self.best_eval}
        if self.eval is not None:
            out["eval"] = self.eval
        if self.wandb_run_id is not None:
            out["wandb_run_id"] = self.wandb_run_id
        return out

    @classmethod
    def parse(cls, raw: dict[str, Any], where: Path | str) -> CheckpointMeta:
        """The meta of a checkpoint read from disk; raises `UserError` naming `where` and the field that is missing
        or of the wrong type."""

        def field(value: Any, name: str, kind: type | tuple[type, ...], optional: bool = False, low: int = 0) -> Any:
            if value is None and optional:
                return None
            wrong = isinstance(value, bool) or not isinstance(value, kind)  # JSON's true is no count
            if wrong or (kind is int and value < low):
                expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
                raise UserError(f"checkpoint {where} is damaged: meta field '{name}' is {value!r}; expected "
                                f"{expected}" + (f" >= {low}" if kind is int else ""))
            return value

        if not isinstance(raw, dict):
            raise UserError(f"checkpoint {where} is damaged: its meta is a {type(raw).__name__}, not a mapping")
        counters = field(raw.get("counters"), "counters", dict)
        env_steps = field(counters.get("env_steps"), "counters.env_steps", int)
        return cls(
            config=field(raw.get("config"), "config", dict),
            env_spec=field(raw.get("env_spec"), "env_spec", dict),
            algo=field(raw.get("algo"), "algo", str),
            actors=field(raw.get("actors"), "actors", int, low=1),
            env_steps=env_steps,
            updates=field(counters.get("updates"), "counters.updates", int),
            group_env_steps=field(counters.get("group_env_steps", env_steps), "counters.group_env_steps", int),
            sampler_rng=field(raw.get("sampler_rng"), "sampler_rng", dict, optional=True),
            best_eval=field(raw.get("best_eval"), "best_eval", (int, float), optional=True),
            eval=field(raw.get("eval"), "eval", dict, optional=True),
            wandb_run_id=field(raw.get("wandb_run_id"), "wandb_run_id", str, optional=True),
        )

    def imports(self) -> list[str]:
        """The modules that rebuilding this checkpoint's run imports beyond jaxrl_dist's own, as `module (key)`:
        the custom env, wrappers, torso and algorithm its config names as `package.module:Name`."""
        def section(name: str) -> dict[str, Any]:
            value = self.config.get(name)
            return value if isinstance(value, dict) else {}

        env, network, algo = section("env"), section("network"), section("algo")
        named = [("env.id", env.get("id")), ("network.torso", network.get("torso")), ("algo.name", algo.get("name"))]
        wrappers: list[Any] = env["wrappers"] if isinstance(env.get("wrappers"), list) else []
        named += [(f"env.wrappers[{i}]", next(iter(w), None) if isinstance(w, dict) else w)
                  for i, w in enumerate(wrappers)]
        return [f"{value.partition(':')[0]} ({key})" for key, value in named
                if isinstance(value, str) and ":" in value and not value.startswith("gymnasium:")]


def _orbax() -> Any:
    """`orbax.checkpoint`, imported on first use: its import takes about 0.3 s, which a run spends when it first
    saves or restores, not at its start."""
    import orbax.checkpoint

    return orbax.checkpoint


def quiet_orbax_logging() -> None:
    """Lowers orbax's absl logging to warnings: at INFO it logs several lines per save and restore."""
    absl.logging.set_verbosity(absl.logging.WARNING)


@contextlib.contextmanager
def _no_asyncio_error_logs() -> Iterator[None]:
    """Hides the 'unhandled exception during asyncio.run() shutdown' tracebacks orbax's reader logs on a
    damaged file; the same error reaches us as an exception, which we report as a UserError."""
    asyncio_logger = logging.getLogger("asyncio")
    level = asyncio_logger.level
    asyncio_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        asyncio_logger.setLevel(level)


def _jsonable(value: Any) -> Any:
    """`json.dumps` hook: numpy / jax scalars and small arrays in `meta` (counters, say) become Python values."""
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint meta holds a {type(value).__name__}, which is not JSON-able: {value!r}")


def _abstract(target: Any) -> Any:
    """The shape/dtype/sharding skeleton of `target` that orbax restores into.

    Python scalars stay concrete, so they come back as Python scalars. An abstract leaf without a sharding (what
    `jax.eval_shape` gives) is placed on the first local device: without a sharding orbax would return a numpy or a
    jax array depending on how the leaf was saved, and would not check its shape.
    """

    def leaf(x: Any) -> Any:
        if isinstance(x, (np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
        if isinstance(x, jax.Array):
            return _orbax().utils.to_shape_dtype_struct(x)
        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=SingleDeviceSharding(jax.local_devices()[0]))
        return x

    return jax.tree.map(leaf, target)


def _match_target(target: Any, restored: Any, step_dir: Path) -> Any:
    """Checks every restored leaf's shape against `target` and gives numpy leaves of `target` numpy back.

    Orbax only checks shapes of leaves it restores as jax arrays; a numpy leaf comes back with the saved shape.

    Raises:
        UserError: A leaf's saved shape differs from the target's.
    """

    def leaf(path: Any, want: Any, got: Any) -> Any:
        if isinstance(want, (bool, int, float, complex)):
            return got
        if np.shape(got) != tuple(want.shape):
            raise UserError(
                f"checkpoint {step_dir} does not match the restore target: {jax.tree_util.keystr(path)} has shape "
                f"{np.shape(got)} on disk, {tuple(want.shape)} in the target"
            )
        if isinstance(want, (np.ndarray, np.generic)):
            return np.asarray(got, dtype=want.dtype)[()] if isinstance(want, np.generic) else np.asarray(got)
        if isinstance(got, np.ndarray):  # a jax leaf saved from numpy: put it where the target says
            return jax.device_put(got.astype(want.dtype), getattr(want, "sharding", None))
        return got

    return jax.tree_util.tree_map_with_path(leaf, target, restored)


class Checkpointer:
    """Saves and restores `(state, meta, extra)` checkpoints in `directory`, keeping the latest `keep`.

    Saves are synchronous. Steps must increase: `save` skips a step that is not above `latest_step()`.
    In a multi-process run only rank 0 saves; each process reads for itself (no cross-process barriers).

    PRNG keys: both raw `uint32[2]` keys (`jax.random.PRNGKey`) and typed keys (`jax.random.key`) round-trip;
    each comes back in the form the restore `target` has.

    Args:
        directory: The checkpoint folder (`<exp_dir>/checkpoints`); created by the first `save`, so that reading
            (export) never creates directories.
        keep: How many of the latest checkpoints to keep on disk; older ones are deleted after each save.

    Raises:
        UserError: `keep` < 1.
    """

    def __init__(self, directory: Path, *, keep: int = 3) -> None:
        if keep < 1:
            raise UserError(f"checkpoint keep={keep} is not allowed: keep at least 1 checkpoint")
        quiet_orbax_logging()
        self.directory = Path(directory).absolute()
        self._lock = threading.Lock()
        self._saved_once = False
        self._keep = keep
        self._opened: ocp.CheckpointManager | None = None  # see `_manager`

    @property
    def _manager(self) -> ocp.CheckpointManager:
        """The orbax manager, made on first use (under `_lock`), so a run imports orbax when it first saves."""
        if self._opened is None:
            ocp = _orbax()
            options = ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False,
                preservation_policy=ocp.checkpoint_managers.LatestN(n=self._keep),
                create=False,
                # Left to our first save: cleaning at construction would delete the in-flight save of a live run
                # that another process (export, an evaluator) opened for reading.
                cleanup_tmp_directories=False,
                # Checkpoints hold host arrays that one process writes (rank 0) or reads: in a jax.distributed run
                # each manager works for its own process alone, without orbax's cross-process barriers.
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=jax.process_index(), active_processes={jax.process_index()}
                ) if jax.process_count() > 1 else ocp.options.MultiprocessingOptions(),
            )
            self._opened = ocp.CheckpointManager(self.directory, options=options,
                                                 item_names=(_STATE, _META, _EXTRA))
        return self._opened

    def all_steps(self) -> list[int]:
        """The finished checkpoints' steps, ascending."""
        with self._lock:
            return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The highest finished step, or None when there is none."""
        with self._lock:
            return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], extra: Any | None = None, replace: bool = False
             ) -> bool:
        """Writes checkpoint `step`, then deletes checkpoints beyond the newest `keep`.

        Args:
            step: The checkpoint's step (the env step count, typically); must exceed `latest_step()`.
            state: A pytree of jax/numpy arrays and Python scalars (a `flax.struct.dataclass`).
            meta: JSON-able description of the run (config, env spec, counters); numpy scalars are converted.
                `format_version` is added (and overrides a key of that name).
            extra: An optional pytree of numpy arrays, saved as its own item (a replay buffer snapshot).
            replace: Replace the checkpoint of `step` if it is the latest (the final state of a run that ended at the
                env steps of its last periodic save, after more updates). It is deleted first: a crash during this
                save leaves the checkpoints before it.

        Returns:
            True if written; False if `step` is not above the latest step (a checkpoint for it, or for a later
            step, exists already: e.g. the final save of a run that ends right after a periodic one).
        """
        record = {**json.loads(json.dumps(meta, default=_jsonable)), "format_version": FORMAT_VERSION}
        ocp = _orbax()
        items: dict[str, Any] = {_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(record)}
        if extra is not None:
            items[_EXTRA] = ocp.args.StandardSave(extra)
        with self._lock:
            latest = self._manager.latest_step()
            if replace and step == latest:
                self._manager.delete(step)
            elif latest is not None and step <= latest:
                logger.warning("checkpoint step %d not saved: step %d exists in %s", step, latest, self.directory)
                return False
            if not self._saved_once:
                self._prepare_first_save()
            saved = self._manager.save(step, args=ocp.args.Composite(**items))
            self._manager.wait_until_finished()
            return bool(saved)

    def _prepare_first_save(self) -> None:
        """Creates the directory and deletes tmp dirs of saves a crashed run left (orbax refuses to reuse one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            for child in self.directory.iterdir():
                if _orbax().utils.TMP_DIR_SUFFIX in child.name:
                    logger.warning("deleting the unfinished checkpoint %s of an interrupted save", child)
                    shutil.rmtree(child, ignore_errors=True)
        self._saved_once = True

    def _step_dir(self, step: int | None) -> tuple[int, Path]:
        """Resolves `step` (None: the latest) to a finished step and its directory, or raises UserError."""
        steps = sorted(self._manager.all_steps())
        if not steps:
            raise UserError(f"no checkpoint in {self.directory}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise UserError(f"no checkpoint for step {step} in {self.directory}; available steps: {steps}")
        return step, self.directory / str(step)

    def _read_meta(self, step: int, step_dir: Path) -> dict[str, Any]:
        ocp = _orbax()
        try:
            with _no_asyncio_error_logs():
                meta = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        except Exception as err:  # orbax raises anything from FileNotFoundError to JSONDecodeError here
            raise UserError(f"checkpoint {step_dir} is unreadable (meta: {type(err).__name__}: {err})") from err
        if not isinstance(meta, dict):
            raise UserError(f"checkpoint {step_dir} is unreadable (meta is a {type(meta).__name__}, not a dict)")
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise UserError(f"checkpoint {step_dir} is damaged: its format_version is {version!r}; expected an "
                            f"integer from 1 to {FORMAT_VERSION}")
        if version > FORMAT_VERSION:
            raise UserError(
                f"checkpoint {step_dir} has format_version {version!r}; this jaxrl_dist reads versions up to "
                f"{FORMAT_VERSION}: upgrade jaxrl_dist"
            )
        return meta

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """Returns the meta of checkpoint `step` (None: the latest) without reading any array.

        Raises:
            UserError: No such step (the message lists the available ones), an unreadable meta, or a
                `format_version` newer than `FORMAT_VERSION`.
        """
        with self._lock:
            step, step_dir = self._step_dir(step)
            return self._read_meta(step, step_dir)

    def restore(self, step: int | None = None, *, target: Any) -> tuple[Any, dict[str, Any], Any | None]:
        """Restores checkpoint `step` (None: the latest).

        Args:
            step: Which checkpoint; None for the latest.
            target: A pytree of the saved state's structure: concrete arrays, `jax.ShapeDtypeStruct`s (from
                `jax.eval_shape`), or a mix. Leaves come back with the target's shapes and dtypes: numpy leaves as
                numpy, jax and abstract leaves as jax arrays (with the target's sharding, else on the first local
                device), Python scalars as Python scalars.

        Returns:
            `(state, meta, extra)`: `state` shaped like `target`, `meta` the saved dict (with `format_version`),
            `extra` the saved numpy pytree or None if the checkpoint has none.

        Raises:
            UserError: No such step (the message lists the available ones); a damaged checkpoint or one whose
                structure differs from `target` (the message names its directory); a newer `format_version`.
        """
        with self._lock:
            step, step_dir = self._step_dir(step)
            meta = self._read_meta(step, step_dir)
            ocp = _orbax()
            items: dict[str, Any] = {_STATE: ocp.args.StandardRestore(_abstract(target))}
            has_extra = (step_dir / _EXTRA).is_dir()
            if has_extra:
                # No target: orbax restores numpy arrays with the saved shapes and dtypes, as the buffer wants.
                items[_EXTRA] = ocp.args.StandardRestore()
            try:
                with _no_asyncio_error_logs():
                    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as err:  # tensorstore/orbax raise ValueError, OSError, KeyError... on damaged files
                raise UserError(
                    f"checkpoint {step_dir} is unreadable or does not match the restore target "
                    f"({type(err).__name__}: {_first_line(err)})"
                ) from err
            state = _match_target(target, restored[_STATE], step_dir)
            return state, meta, restored[_EXTRA] if has_extra else None

    def close(self) -> None:
        """Waits for pending work and releases orbax's resources."""
        with self._lock:
            if self._opened is not None:
                self._opened.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _first_line(err: BaseException) -> str:
    """The head of an error message: tensorstore's include a multi-kilobyte spec dump."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if len(text) <= 300 else text[:297] + "..."
