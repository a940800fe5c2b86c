"""Experiment trackers beside `metrics.jsonl`: Weights & Biases runs that follow a run through `--resume` and requeues.

`MetricsWriter` forwards every record it writes to a `Tracker`, so a runner only builds one with `open_tracker` and
hands it over. A W&B run lives as long as the experiment, not the process: its id is kept in the checkpoint's meta,
and a resumed or requeued process passes it back as `run_id`; W&B is started with `resume="allow"`, so the records
continue the same run. Its files go to `<exp_dir>/wandb/`. In offline mode each process writes its own
`wandb/offline-run-<time>-<id>/`; `wandb sync` uploads the folders of one id one after the other, into one run.

Records are plotted against `env_steps` (W&B's `define_metric`), not W&B's own step, which only ever grows: after a
resume, and for the evaluation lines of an asynchronous run, `env_steps` can go back.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from jaxrl_dist.errors import ConfigError, UserError

WANDB_KEY = "log.wandb"
WANDB_MODES = ("online", "offline", "disabled")
INSTALL_HINT = "pip install 'jaxrl_dist[wandb]'"
STEP_METRIC = "env_steps"
VIDEO_KEY = "eval/video"
_MISSING = f"{WANDB_KEY} is set but wandb is not installed: {INSTALL_HINT}"


class Tracker(Protocol):
    """What `MetricsWriter` forwards to: the numeric metrics of each record, videos, and the end of the run."""

    @property
    def run_id(self) -> str | None: ...

    def log(self, env_steps: int, metrics: Mapping[str, float]) -> None: ...

    def log_video(self, path: Path, env_steps: int) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class WandbSettings:
    """The `log.wandb` mapping.

    Attributes:
        project: W&B project.
        entity: W&B user or team; None: the logged-in user's default entity.
        group: Groups runs in the W&B UI, e.g. the seeds and sweep values of one `launch slurm` experiment.
        tags: Tags of the run.
        mode: `online`, `offline` (files only, upload later with `wandb sync`) or `disabled`; None: W&B's own
            default (the `WANDB_MODE` environment variable, else online).
    """

    project: str = "jaxrl_dist"
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    mode: str | None = None

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> WandbSettings:
        """Checks the keys and types of a `log.wandb` mapping.

        Raises:
            ConfigError: An unknown key, a value of the wrong type, or a mode not in `WANDB_MODES`.
        """
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{WANDB_KEY} must be a mapping of {_allowed()}, got {type(settings).__name__}")
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{WANDB_KEY}.{unknown[0]} is not a key of {WANDB_KEY}; allowed: {_allowed()}")
        for key in ("project", "entity", "group", "mode"):
            value = settings.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{WANDB_KEY}.{key} must be a string, got {value!r}")
        if settings.get("project") == "":
            raise ConfigError(f"{WANDB_KEY}.project must not be empty")
        mode = settings.get("mode")
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError(f"{WANDB_KEY}.mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        tags = settings.get("tags") or ()
        if isinstance(tags, str) or not isinstance(tags, Sequence) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{WANDB_KEY}.tags must be a list of strings, got {tags!r}")
        given = {k: v for k, v in settings.items() if v is not None}  # null: the default
        return cls(**{**given, "tags": tuple(tags)})


def _as_settings(settings: Mapping[str, Any] | WandbSettings) -> WandbSettings:
    return settings if isinstance(settings, WandbSettings) else WandbSettings.from_mapping(settings)


def _allowed() -> str:
    return ", ".join(f.name for f in dataclasses.fields(WandbSettings))


def _import_wandb() -> Any:
    """Imports wandb here, not at the top: runs without tracking neither need it installed nor pay for the import."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(_MISSING) from None
    return wandb


class WandbTracker:
    """One W&B run for one experiment directory, continued across processes.

    Args:
        config: The resolved config (as in `config.yaml`): the run's W&B config.
        settings: The `log.wandb` settings.
        exp_dir: The experiment directory; W&B writes its files to `exp_dir/wandb/`.
        run_id: The id of the W&B run to continue (kept in the checkpoint of the run being resumed); None starts a
            new run with a fresh id.
        name: The run's display name; None: the experiment directory's name.

    Raises:
        ConfigError: wandb is not installed, or `settings` is not a valid `log.wandb`.
        UserError: W&B did not start (no API key in online mode, no connection, ...).
    """

    def __init__(self, config: Mapping[str, Any], settings: Mapping[str, Any] | WandbSettings, exp_dir: Path, *,
                 run_id: str | None = None, name: str | None = None) -> None:
        s = _as_settings(settings)
        wandb = _import_wandb()
        self._wandb = wandb
        self._closed = False
        try:
            self._run = wandb.init(
                project=s.project, entity=s.entity, group=s.group, tags=list(s.tags) or None, mode=s.mode,
                dir=str(exp_dir), id=run_id, resume="allow", name=name or Path(exp_dir).name, config=dict(config),
                # The run's console is already in its terminal or Slurm log; capturing it would also wrap the
                # stdout that the live progress bar draws on.
                settings=wandb.Settings(console="off"),
            )
        except wandb.errors.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"W&B did not start: {first} (run `wandb login`, or set {WANDB_KEY}.mode=offline "
                            "and upload later with `wandb sync`)") from None
        self._run.define_metric(STEP_METRIC)
        self._run.define_metric("*", step_metric=STEP_METRIC)

    @property
    def run_id(self) -> str | None:
        """The W&B run id: store it with the checkpoint and pass it back as `run_id` to continue this run."""
        return self._run.id

    def log(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        """Logs numeric metrics at `env_steps` (which may go back after a resume; W&B's own step still grows)."""
        if metrics:
            self._run.log({**metrics, STEP_METRIC: int(env_steps)})

    def log_video(self, path: Path, env_steps: int) -> None:
        """Uploads a finished episode video (MP4 or GIF) under `eval/video` at `env_steps`."""
        self._run.log({VIDEO_KEY: self._wandb.Video(str(path)), STEP_METRIC: int(env_steps)})

    def close(self) -> None:
        """Finishes the run. W&B's service may still be writing its files, or uploading, after this returns; it is
        done when the process exits (wandb waits for it then). Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._run.finish()


def check_tracking(settings: Mapping[str, Any] | WandbSettings | None) -> None:
    """Fails early, before a run builds anything, on what `open_tracker` would fail on later: a bad `log.wandb` or
    a missing wandb (looked up, not imported).

    Raises:
        ConfigError: As `WandbSettings.from_mapping`, or wandb is not installed while tracking is on.
    """
    if settings is None:
        return
    s = _as_settings(settings)
    if s.mode != "disabled" and importlib.util.find_spec("wandb") is None:
        raise ConfigError(_MISSING)


def open_tracker(config: Mapping[str, Any], settings: Mapping[str, Any] | WandbSettings | None, exp_dir: Path, *,
                 run_id: str | None = None, name: str | None = None) -> WandbTracker | None:
    """The tracker that `log.wandb` asks for: None when it is unset or `mode: disabled` (wandb is then not imported,
    nor needed), else a `WandbTracker` (see there for the arguments and errors)."""
    if settings is None:
        return None
    s = _as_settings(settings)
    if s.mode == "disabled":
        return None
    return WandbTracker(config, s, exp_dir, run_id=run_id, name=name)
