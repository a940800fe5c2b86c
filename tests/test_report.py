"""The report's statistics (jaxrl_dist.report): std with ddof=1, the interquartile mean and its stratified bootstrap
interval, with known answers, and the table (plain, rich) and JSON they end up in. No cluster: runs are faked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from jaxrl_dist import report
from jaxrl_dist.report import BOOTSTRAP_REPS, bootstrap_iqm_ci, describe, iqm
from jaxrl_dist.slurm import DONE_FILE


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert iqm(range(1, 9)) == 4.5  # 3, 4, 5, 6
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # order does not matter
    assert iqm([1, 2, 3, 4]) == 2.5  # one cut at each end
    assert iqm([1, 2, 3, 100, -100]) == 2.0  # floor(5/4) = 1 cut at each end: outliers go
    assert iqm([1, 2, 3]) == 2.0 and iqm([7]) == 7.0  # under 4 runs nothing is cut: the mean
    assert iqm(np.arange(1, 9).reshape(4, 2)) == 4.5  # [runs, tasks]: over all scores


def test_iqm_matches_scipy_trim_mean() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in range(1, 13):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), abs=1e-12), n


def test_describe_uses_ddof_1_and_handles_one_run() -> None:
    assert describe([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert describe([]) is None
    one = describe([5.0], scores=True)
    assert one == {"mean": 5.0, "std": None, "n": 1, "iqm": 5.0, "iqm_ci": None}
    two = describe([20.0, 40.0], scores=True)
    assert two is not None and two["std"] == pytest.approx(np.sqrt(200.0)) and two["iqm"] == 30.0
    # The IQMs of the resamples of 2 runs are 20, 30, 40 with chances 1/4, 1/2, 1/4: the 95% interval spans both.
    assert two["iqm_ci"] == [20.0, 40.0]


def test_bootstrap_interval_holds_the_iqm_and_is_reproducible() -> None:
    scores = np.random.default_rng(1).normal(100.0, 20.0, size=10)
    low, high = bootstrap_iqm_ci(scores, seed=3)
    assert low < iqm(scores) < high and high - low < 60.0
    assert bootstrap_iqm_ci(scores, seed=3) == (low, high)  # the same seed: the same interval
    assert bootstrap_iqm_ci(scores, seed=4) != (low, high)
    wide = bootstrap_iqm_ci(scores, seed=3, level=0.99)
    assert wide[0] <= low and high <= wide[1]
    assert bootstrap_iqm_ci([3.0]) == (3.0, 3.0) and bootstrap_iqm_ci([2.0] * 5) == (2.0, 2.0)


def test_bootstrap_is_stratified_over_tasks() -> None:
    # Every run scores 0 on task 0 and 10 on task 1: resampling runs within each task never changes the mix, so
    # the interval is the IQM itself; pooling runs across tasks would not keep the mix.
    scores = np.stack([np.zeros(6), np.full(6, 10.0)], axis=1)  # [runs, tasks]
    assert bootstrap_iqm_ci(scores) == (5.0, 5.0)
    with pytest.raises(ValueError, match="runs, tasks"):
        bootstrap_iqm_ci(np.zeros((2, 2, 2)))


def _fake_run(path: Path, lr: float, returns: list[float]) -> None:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"algo:\n  lr: {lr}\ntrain:\n  seed: {path.name[-1]}\n")
    lines = [json.dumps({"env_steps": 1000 * (i + 1), "wall_s": 2.0 * (i + 1), "time": 1e9 + 2.0 * (i + 1),
                         "eval/episode_return": r}) for i, r in enumerate(returns)]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / DONE_FILE).write_text("")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """lr=1: 5 seeds with final returns 10, 20, 30, 40, 500; lr=2: one seed."""
    exp = tmp_path / "sw"
    for seed, final in enumerate([10.0, 20.0, 30.0, 40.0, 500.0]):
        _fake_run(exp / f"lr=1_seed{seed}", 1.0, [0.0, final])
    _fake_run(exp / "lr=2_seed0", 2.0, [5.0])
    return exp


def test_json_rows_add_iqm_and_interval(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(sweep), "--json", "--out", str(sweep.parent / "plots")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"metric", "rows", "runs", "plots", "bootstrap"}
    assert out["bootstrap"] == {"reps": BOOTSTRAP_REPS, "seed": 0, "level": 0.95}
    many, one = out["rows"]
    final = many["final"]
    assert final["n"] == 5 and final["mean"] == 120.0 and final["std"] == pytest.approx(np.std(
        [10, 20, 30, 40, 500], ddof=1))
    assert final["iqm"] == 30.0  # 20, 30, 40: the outlier seed does not move it
    low, high = final["iqm_ci"]
    assert low <= 30.0 <= high and [low, high] == list(bootstrap_iqm_ci([10, 20, 30, 40, 500]))
    assert set(many["wall_s"]) == {"mean", "std", "n"}  # only the metric's columns get an IQM
    assert one["final"] == {"mean": 5.0, "std": None, "n": 1, "iqm": 5.0, "iqm_ci": None}
    assert one["states"] == {"done": 1, "running": 0, "missing": 0}


def test_plain_table_when_not_a_terminal(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(sweep), "--out", str(sweep.parent / "plots")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "final IQM [95% CI]" in lines[0] and set(lines[1]) == {"-", " "}
    assert lines[2].startswith("algo.lr=1 (5 seeds)") and "120.0 ± 212.7" in lines[2] and "30.0 [" in lines[2]
    assert lines[3].startswith("algo.lr=2") and "±" not in lines[3] and "[" not in lines[3] and "1/0/0" in lines[3]
    assert any("percentile bootstrap" in line for line in lines[4:])


def test_rich_table_shows_the_same_cells(sweep: Path) -> None:
    from rich.console import Console

    _, rows = report.report(sweep, "eval/episode_return")
    buffer = io.StringIO()
    report.print_rich_table(rows, "eval/episode_return", Console(file=buffer, width=250, color_system=None))
    text = buffer.getvalue()
    low, high = rows[0]["final"]["iqm_ci"]
    assert "120.0 ± 212.7" in text and f"30.0 [{low:.1f}, {high:.1f}]" in text and "percentile bootstrap" in text
