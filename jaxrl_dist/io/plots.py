"""Learning curves from experiment directories: one PNG, one line per config, a band across its seeds.

Runs whose resolved configs (`config.yaml`) differ only in keys that do not shape learning (`train.seed`, the budget,
logging, checkpoints, evaluation output; `GROUP_IGNORED`) form one group: the group's line is the mean over its runs
on the env-step range they all cover, and the shaded band spans their minimum to maximum. Lines are labelled by the
config keys that tell the groups apart (else by directory name). `python -m jaxrl_dist.plot` is the command line;
array reports call `plot_experiments` directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxrl_dist.errors import UserError
from jaxrl_dist.io.experiment import CONFIG_FILE, METRICS_FILE
from jaxrl_dist.io.metrics import read_metrics

X_AXES = ("env_steps", "wall_s")
# Config keys (prefixes) that do not change what is learned: runs that differ only in these share a line.
GROUP_IGNORED = ("train.seed", "train.total_env_steps", "log.", "checkpoint.", "eval.target_return", "eval.video",
                 "roles.evaluator.")
GRID_POINTS = 200


@dataclasses.dataclass(frozen=True)
class Curve:
    """One run's values of a metric. `x` ascending, `y` the value logged at that x (the last one, after a resume)."""

    run: Path
    x: np.ndarray
    y: np.ndarray


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs of one config: `label` names it in the legend."""

    label: str
    runs: list[Path]


def read_curve(run: Path, metric: str, x: str = "env_steps") -> Curve | None:
    """The metric's values in `run/metrics.jsonl` against `x`; None if the run never logged it.

    Raises:
        UserError: The run has no metrics.jsonl.
    """
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{run} is not an experiment directory: it has no {METRICS_FILE}")
    points: dict[float, float] = {}
    for record in read_metrics(path):
        value, at = record.get(metric), record.get(x)
        if isinstance(value, (int, float)) and isinstance(at, (int, float)) and not isinstance(value, bool):
            points[float(at)] = float(value)  # a resumed run logs some steps again: the later value wins
    if not points:
        return None
    xs = np.array(sorted(points))
    return Curve(Path(run), xs, np.array([points[v] for v in xs]))


def metric_names(runs: Sequence[Path]) -> list[str]:
    """The numeric metrics logged by any of `runs` (for error messages)."""
    names: set[str] = set()
    for run in runs:
        for record in read_metrics(Path(run) / METRICS_FILE):
            names.update(k for k, v in record.items() if isinstance(v, (int, float)) and k not in ("time",))
    return sorted(names)


def _flat_config(run: Path) -> dict[str, Any]:
    path = Path(run) / CONFIG_FILE
    try:
        tree = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path} cannot be read ({type(err).__name__})") from None
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and prefix != "env.kwargs.":
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(tree or {}, "")
    return {k: v for k, v in out.items() if not k.startswith(GROUP_IGNORED)}


def group_runs(runs: Sequence[Path]) -> list[Group]:
    """Groups runs by config (all but the `GROUP_IGNORED` keys), in the order of their first run."""
    members: dict[str, list[Path]] = {}  # dicts keep insertion order: groups come in the order given
    configs: dict[str, dict[str, Any]] = {}
    for run in runs:
        cfg = _flat_config(run)
        key = yaml.safe_dump(cfg, sort_keys=True)
        members.setdefault(key, []).append(Path(run))
        configs.setdefault(key, cfg)
    firsts = list(configs.values())
    differing = sorted({k for c in firsts for k in c if any(c.get(k) != o.get(k) for o in firsts)})
    groups = []
    for key, cfg in configs.items():
        paths = members[key]
        label = ", ".join(f"{k}={_short(cfg.get(k))}" for k in differing)
        if not label or len(label) > 60:  # configs that differ in many keys are told apart by their run names
            label = _common_name(paths)
        groups.append(Group(label + (f" ({len(paths)} seeds)" if len(paths) > 1 else ""), paths))
    return groups


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _common_name(paths: Sequence[Path]) -> str:
    names = [p.name for p in paths]
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip("_-=.")
    return prefix or " / ".join(names)


def band(curves: Sequence[Curve], points: int = GRID_POINTS
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """`(x, mean, low, high)` of several curves interpolated onto the x range they all cover; None if they do not
    overlap (e.g. `wall_s` of runs that started at different times after a slow start-up).

    A single curve is returned as it is (low = high = mean).
    """
    if len(curves) == 1:
        c = curves[0]
        return c.x, c.y, c.y, c.y
    lo, hi = max(c.x[0] for c in curves), min(c.x[-1] for c in curves)
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, c.x, c.y) for c in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def timing_label(runs: Sequence[Path]) -> str:
    """`(300,000 env steps in 52.1 min, 96 env steps/s)`: how far runs got and how fast, from their last metric
    line (the mean over several runs); an empty string if none logged `wall_s`."""
    clocks = [c for c in (read_curve(r, "wall_s") for r in runs) if c is not None and c.y[-1] > 0]
    if not clocks:
        return ""
    steps = float(np.mean([c.x[-1] for c in clocks]))
    wall = float(np.mean([c.y[-1] for c in clocks]))
    return f"({steps:,.0f} env steps in {_duration(wall)}, {steps / wall:,.0f} env steps/s)"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.2f} h"


def _wall_clock_axis(ax: Any, run: Path) -> None:
    """A top axis of `run`'s wall-clock minutes over the env-step axis (its `wall_s` at each env step)."""
    clock = read_curve(run, "wall_s")
    if clock is None or len(clock.x) < 2:
        return
    minutes = np.maximum.accumulate(clock.y) / 60.0  # monotone, even across a resume
    if minutes[-1] <= minutes[0]:
        return
    # Extended at the run's mean rate past both ends, so that ticks in the axes' margins do not pile up where the
    # interpolation would stop; the clock at env step 0 reads about the start-up time.
    span, per_minute = clock.x[-1], (clock.x[-1] - clock.x[0]) / (minutes[-1] - minutes[0])
    steps = np.concatenate([[clock.x[0] - span], clock.x, [clock.x[-1] + span]])
    minutes = np.concatenate([[minutes[0] - span / per_minute], minutes, [minutes[-1] + span / per_minute]])
    top = ax.secondary_xaxis("top", functions=(lambda s: np.interp(s, steps, minutes),
                                               lambda m: np.interp(m, minutes, steps)))
    top.set_xlabel("wall-clock minutes", fontsize=8)
    top.tick_params(labelsize=8)


def plot_experiments(
    runs: Sequence[str | Path], out: str | Path, metric: str = "eval/episode_return", x: str = "env_steps",
    title: str | None = None, warn: Any = print, timing: bool = False,
) -> Path:
    """Writes a PNG of `metric` against `x` for the experiment directories `runs`; returns its path.

    With `timing`, each line's label ends with its runs' env steps, wall-clock time and mean env steps per second
    (`timing_label`), and a single run plotted against env steps gets a top axis of its wall-clock minutes.

    Raises:
        UserError: A run is no experiment directory, `x` is not allowed, or no run logged `metric` (the message
            lists the metrics that exist).
    """
    if x not in X_AXES:
        raise UserError(f"--x {x!r} is not allowed; allowed: {', '.join(X_AXES)}")
    paths = [Path(r) for r in runs]
    for p in paths:
        if not p.is_dir():
            raise UserError(f"experiment directory {p} does not exist")
    curves = {p: read_curve(p, metric, x) for p in paths}
    missing = [str(p) for p, c in curves.items() if c is None]
    if len(missing) == len(paths):
        raise UserError(f"metric {metric!r} is in none of the runs; logged metrics: {', '.join(metric_names(paths))}")
    if missing:
        warn(f"warning: no {metric!r} in {', '.join(missing)}; left out of the plot")
    groups = group_runs([p for p in paths if curves[p] is not None])

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=150)
    try:
        for i, group in enumerate(groups):
            members = [c for c in (curves[r] for r in group.runs) if c is not None]
            color, summary = f"C{i % 10}", band(members)
            label = f"{group.label} {timing_label(group.runs)}".strip() if timing else group.label
            if summary is None:
                warn(f"warning: the runs of '{group.label}' share no {x} range; each is drawn on its own")
                for j, c in enumerate(members):
                    ax.plot(c.x, c.y, color=color, label=label if j == 0 else None, linewidth=1.0)
                continue
            gx, mean, low, high = summary
            ax.plot(gx, mean, color=color, label=label, linewidth=1.6, marker="o" if len(gx) < 30 else None,
                    markersize=3)
            if len(group.runs) > 1:
                ax.fill_between(gx, low, high, color=color, alpha=0.2, linewidth=0)
        if timing and x == "env_steps" and len(groups) == 1 and len(groups[0].runs) == 1:
            _wall_clock_axis(ax, groups[0].runs[0])
        ax.set_xlabel({"env_steps": "env steps", "wall_s": "wall-clock seconds"}[x])
        ax.set_ylabel(metric)
        ax.set_title(title or metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
