"""`python -m jaxrl_dist.report EXP [--metric M] [--json] [--out DIR]`: the results of a job array, also mid-run.

Reads the runs of `EXP` (the tasks of `EXP/slurm/manifest.json` written by `jaxrl_dist.launch`, or else every
subdirectory that holds a run), and prints one row per sweep value: mean ± std (ddof=1) over its seeds of the final
and the best value of the metric, with their interquartile mean (IQM) and its 95% bootstrap confidence interval, the
wall time, env steps and SPS, and how many of its tasks are done, running or missing: a rich table on a terminal,
plain text otherwise, one JSON object with --json.

The IQM and its interval follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice",
https://arxiv.org/abs/2108.13264): the IQM is the mean of the middle 50% of the runs' scores (scipy's
`trim_mean(scores, 0.25)`: floor(n/4) runs cut at each end, so with fewer than 4 runs it is the mean); the interval
is the percentile bootstrap of the IQM over runs resampled with replacement, stratified per task, and seeded, so a
report reads the same every time. A few seeds give rough intervals; a single run has neither a std nor an interval.

Learning curves (one line per sweep value, a band across seeds) go to PNG files through `jaxrl_dist.io.plots`.
A run still training is read as far as it got (a cut last metrics line is skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxrl_dist.errors import UserError
from jaxrl_dist.io.experiment import CONFIG_FILE, METRICS_FILE
from jaxrl_dist.io.metrics import read_metrics
from jaxrl_dist.slurm.script import DONE_FILE, MANIFEST_FILE

STATES = ("done", "running", "missing")
TRAIN_METRIC = "train/episode_return"
SCORES = ("final", "best")  # the metric's columns: these also get an IQM and its bootstrap interval
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One run as far as its metrics go. `final`/`best`: the metric's value at the last step logged / its maximum."""

    name: str
    label: str
    state: str
    final: float | None = None
    best: float | None = None
    wall_s: float | None = None
    env_steps: int | None = None
    sps: float | None = None


def _tasks(exp: Path) -> list[tuple[str, str]]:
    """(run name, sweep label) of every task: from the launch manifest, else the run subdirectories."""
    path = exp / "slurm" / MANIFEST_FILE
    if path.is_file():
        try:
            tasks = json.loads(path.read_text())["tasks"]
            return [(str(t["name"]), str(t["label"])) for t in tasks]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} cannot be read ({type(e).__name__}); rewrite it: launch again with --dry-run"
                            ) from None
    runs = sorted(p for p in exp.iterdir() if (p / METRICS_FILE).is_file() or (p / CONFIG_FILE).is_file())
    if not runs:
        raise UserError(f"{exp} holds no runs: neither slurm/{MANIFEST_FILE} nor subdirectories with {METRICS_FILE}")
    from jaxrl_dist.io.plots import group_runs

    return [(run.name, group.label) for group in group_runs(runs) for run in group.runs]


def summarize_run(run: Path, label: str, metric: str) -> TaskResult:
    """The `TaskResult` of one run directory (pure over the files it reads)."""
    if not (run / METRICS_FILE).is_file():
        return TaskResult(run.name, label, "missing")
    records = read_metrics(run / METRICS_FILE)
    state = "done" if (run / DONE_FILE).is_file() else "running"
    points: dict[float, float] = {}  # env_steps -> metric; a resumed run logs some steps again: the later one wins
    segments: dict[float, list[tuple[float, float]]] = {}  # process start -> its (wall_s, env_steps) lines
    for r in records:
        value, at, w, t = (_number(r.get(k)) for k in (metric, "env_steps", "wall_s", "time"))
        if value is not None and at is not None:
            points[at] = value
        if at is not None and w is not None and t is not None:
            segments.setdefault(round(t - w), []).append((w, at))  # a requeued run is written by a new process
    wall = sum(max(w for w, _ in seg) for seg in segments.values())
    steps = max((a for seg in segments.values() for _, a in seg), default=None)
    # SPS over the logged span of each process: the start-up before its first line (compiling) is left out.
    spans = [(max(seg)[0] - min(seg)[0], max(a for _, a in seg) - min(a for _, a in seg)) for seg in segments.values()]
    seconds = sum(d for d, _ in spans)
    sps = sum(n for _, n in spans) / seconds if seconds > 0 else None
    final = points[max(points)] if points else None
    best = max(points.values()) if points else None
    return TaskResult(run.name, label, state, final, best, wall if segments else None,
                      int(steps) if steps is not None else None, sps)


def _number(value: Any) -> float | None:
    """`value` as a float if it is a finite number (metrics write non-finite values as null), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    return float(value) if ok else None


def iqm(scores: Any) -> float:
    """The interquartile mean of all `scores` (any shape, e.g. `[runs]` or `[runs, tasks]`): the mean of what is left
    after cutting floor(n/4) of the n values at each end (scipy's `trim_mean(scores, 0.25, axis=None)`, as rliable)."""
    return float(_iqm_rows(np.asarray(scores, dtype=np.float64).reshape(1, -1))[0])


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """`[R, n]` -> `[R]`: the IQM of each row."""
    n = samples.shape[1]
    cut = n // 4
    return np.sort(samples, axis=1)[:, cut:n - cut].mean(axis=1)


def bootstrap_iqm_ci(scores: Any, *, reps: int = BOOTSTRAP_REPS, level: float = CI_LEVEL,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A percentile bootstrap confidence interval of the IQM, stratified over tasks (rliable's `StratifiedBootstrap`).

    Each of `reps` resamples draws, for every task independently, as many runs as it has, with replacement;
    the interval is the central `level` of the resamples' IQMs.

    Args:
        scores: `[runs]` (one task) or `[runs, tasks]`, one score per run and task.
        reps: Bootstrap resamples.
        level: Coverage of the interval, e.g. 0.95.
        seed: Seed of the resampling: the same scores and seed give the same interval.

    Returns:
        (low, high). With one run every resample is that run, so both bounds are its score.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with at least one run, got shape {x.shape}")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(reps, runs, tasks))  # run index per (resample, draw, task)
    resampled = np.take_along_axis(np.broadcast_to(x, (reps, runs, tasks)), picks, axis=1)
    stats = _iqm_rows(resampled.reshape(reps, runs * tasks))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def describe(values: Sequence[float], *, scores: bool = False) -> dict[str, Any] | None:
    """`mean`, `std` (ddof=1; None for a single value) and `n` of `values`, None if there are none; with `scores`
    also `iqm` and `iqm_ci` ([low, high] at `CI_LEVEL`; None for a single value: one run says nothing of the spread)."""
    if not values:
        return None
    n = len(values)
    stat: dict[str, Any] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if n > 1 else None,
                            "n": n}
    if scores:
        stat["iqm"] = iqm(values)
        stat["iqm_ci"] = list(bootstrap_iqm_ci(values)) if n > 1 else None
    return stat


def summarize(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """One row per sweep label, in first-seen order: the `describe` of each value over the runs that have it."""
    rows: dict[str, list[TaskResult]] = {}
    for r in results:
        rows.setdefault(r.label, []).append(r)
    out = []
    for label, members in rows.items():
        row: dict[str, Any] = {"sweep": label, "runs": len(members)}
        for key in ("final", "best", "wall_s", "env_steps", "sps"):
            row[key] = describe([getattr(m, key) for m in members if getattr(m, key) is not None],
                                scores=key in SCORES)
        row["states"] = {s: sum(m.state == s for m in members) for s in STATES}
        out.append(row)
    return out


def _cell(stat: dict[str, Any] | None, fmt: str) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:{fmt}}" if stat["std"] is None else f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}"


def _iqm_cell(stat: dict[str, Any] | None, fmt: str) -> str:
    if stat is None:
        return "-"
    ci = stat["iqm_ci"]
    return f"{stat['iqm']:{fmt}}" if ci is None else f"{stat['iqm']:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _table(rows: Sequence[dict[str, Any]], metric: str) -> tuple[list[str], list[list[str]], str]:
    """Header, body cells and footnote of the table, shared by the plain and the rich rendering."""
    ci = f"{CI_LEVEL:.0%} CI"
    head = ["sweep", "runs", f"final {metric}", f"final IQM [{ci}]", f"best {metric}", f"best IQM [{ci}]", "wall s",
            "env steps", "SPS", "done/running/missing"]
    body = [[r["sweep"], str(r["runs"]), _cell(r["final"], ".1f"), _iqm_cell(r["final"], ".1f"),
             _cell(r["best"], ".1f"), _iqm_cell(r["best"], ".1f"), _cell(r["wall_s"], ".0f"),
             _cell(r["env_steps"], ".0f"), _cell(r["sps"], ".0f"), "/".join(str(r["states"][s]) for s in STATES)]
            for r in rows]
    note = (f"mean ± std over seeds (ddof=1); IQM: mean of the middle 50% of seeds (of all of them, with fewer than 4); "
            f"[{ci}]: percentile bootstrap over seeds, {BOOTSTRAP_REPS} resamples, seed {BOOTSTRAP_SEED}")
    return head, body, note


def format_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """A plain-text table, one line per sweep value under a header and a rule, then a line that says what the
    statistics are."""
    head, body, note = _table(rows, metric)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", note])


def print_rich_table(rows: Sequence[dict[str, Any]], metric: str, console: Any = None) -> None:
    """The table of `format_table` drawn by rich (for a terminal), on `console` (default: stdout)."""
    from rich.console import Console  # imported here: plain output and --json do not need it
    from rich.table import Table

    head, body, note = _table(rows, metric)
    table = Table(caption=note, caption_justify="left")
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for line in body:
        table.add_row(*line)
    (console or Console()).print(table)


def write_plots(exp: Path, runs: Sequence[Path], out: Path, metrics: Sequence[str]) -> list[Path]:
    """One PNG per metric that some run logged (`plot_experiments`: a line per config, a band across seeds)."""
    from jaxrl_dist.io.plots import plot_experiments

    written = []
    for metric in metrics:
        try:
            written.append(plot_experiments(runs, out / f"{metric.replace('/', '_')}.png", metric,
                                            title=f"{exp.name}: {metric}", warn=lambda msg: None))
        except UserError as e:  # no run logged it yet (an array that just started): the table still stands
            print(f"note: no plot of {metric}: {e}", file=sys.stderr)
    return written


def report(exp: Path, metric: str) -> tuple[list[TaskResult], list[dict[str, Any]]]:
    """The runs of `exp` and their rows.

    Raises:
        UserError: `exp` is not a directory, or holds no runs.
    """
    if not exp.is_dir():
        raise UserError(f"experiment directory {exp} does not exist")
    results = [summarize_run(exp / name, label, metric) for name, label in _tasks(exp)]
    return results, summarize(results)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_dist.report", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="the experiment of a launch, e.g. experiments/sweep")
    p.add_argument("--metric", default="eval/episode_return", help="metric of the table and plot "
                   "(default: eval/episode_return)")
    p.add_argument("--json", action="store_true", help="print the rows and runs as JSON instead of a table")
    p.add_argument("--out", help="folder for the PNG plots (default: EXP/report)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exp = Path(args.experiment)
    try:
        results, rows = report(exp, args.metric)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    runs = [exp / r.name for r in results if r.state != "missing"]
    out = Path(args.out) if args.out else exp / "report"
    plots = write_plots(exp, runs, out, [args.metric, TRAIN_METRIC]) if runs else []
    if args.json:
        print(json.dumps({"metric": args.metric, "rows": rows, "runs": [dataclasses.asdict(r) for r in results],
                          "plots": [str(p) for p in plots],
                          "bootstrap": {"reps": BOOTSTRAP_REPS, "seed": BOOTSTRAP_SEED, "level": CI_LEVEL}}, indent=2))
    else:
        if sys.stdout.isatty():
            print_rich_table(rows, args.metric)
        else:
            print(format_table(rows, args.metric))
        for path in plots:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
