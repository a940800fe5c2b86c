"""Learning-curve plots: runs grouped by config, a mean line and a seed band per group, one PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from jaxrl_dist import plot
from jaxrl_dist.io.plots import band, group_runs, read_curve, timing_label

BLUE, ORANGE, GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # matplotlib's C0, C1, C2


def make_run(root: Path, name: str, lr: float, seed: int, returns: list[tuple[int, float]]) -> Path:
    """An experiment directory as a run leaves it: config.yaml and metrics.jsonl (train lines between evals)."""
    run = root / name
    run.mkdir(parents=True)
    cfg = {"algo": {"name": "dqn", "lr": lr}, "train": {"seed": seed}, "log": {"root": str(root)}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for steps, ret in returns:
        lines.append({"env_steps": steps + 7, "wall_s": steps / 1000, "sps": 1000.0})
        lines.append({"env_steps": steps, "wall_s": steps / 1000 + 0.5, "eval/episode_return": ret})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def near(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(image[..., :3].astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def test_plot_of_two_configs_has_a_line_each_and_a_band_for_seeds(tmp_path: Path) -> None:
    steps = [1000, 2000, 3000, 4000]
    a0 = make_run(tmp_path, "fast_s0", 1e-3, 0, [(s, s / 10) for s in steps])
    a1 = make_run(tmp_path, "fast_s1", 1e-3, 1, [(s, s / 20) for s in steps])
    b = make_run(tmp_path, "slow", 1e-4, 0, [(s, 10.0) for s in steps])

    groups = group_runs([a0, a1, b])
    assert [(g.label, len(g.runs)) for g in groups] == [("algo.lr=0.001 (2 seeds)", 2), ("algo.lr=0.0001", 1)]
    curves = [read_curve(a0, "eval/episode_return"), read_curve(a1, "eval/episode_return")]
    assert all(c is not None for c in curves)
    summary = band([c for c in curves if c is not None])
    assert summary is not None
    x, mean, low, high = summary
    assert x[0] == 1000 and x[-1] == 4000
    np.testing.assert_allclose(mean, x * 0.075)
    np.testing.assert_allclose(low, x / 20)
    np.testing.assert_allclose(high, x / 10)

    out = tmp_path / "curves.png"
    assert plot.main([str(a0), str(a1), str(b), "--out", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert near(image, BLUE, 8) > 300 and near(image, ORANGE, 8) > 300  # two lines (and their legend entries)
    assert near(image, GREEN) == 0  # no third line
    assert near(image, (210, 228, 240), 6) > 2000  # the seed band: C0 at 20% on white
    assert near(image, (255, 229, 207), 6) < 50  # a single run has no band (a few anti-aliased line edges)


def test_curves_sort_x_and_plot_against_wall_clock(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path, "r", 1e-3, 0, [(2000, 5.0), (1000, 3.0), (3000, 7.0)])  # async: evals arrive late
    curve = read_curve(run, "eval/episode_return")
    assert curve is not None and list(curve.x) == [1000, 2000, 3000] and list(curve.y) == [3.0, 5.0, 7.0]
    assert plot.main([str(run), "--x", "wall_s", "--out", str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").stat().st_size > 0
    # Runs of one config whose x ranges do not overlap have no band; each is drawn, with a warning.
    late = make_run(tmp_path, "late", 1e-3, 1, [(5000, 1.0), (6000, 2.0)])
    assert band([read_curve(run, "eval/episode_return"), read_curve(late, "eval/episode_return")]) is None
    assert plot.main([str(run), str(late), "--out", str(tmp_path / "apart.png")]) == 0
    assert "share no env_steps range" in capsys.readouterr().err


def test_plot_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path, "r", 1e-3, 0, [(1000, 3.0)])
    cases = [
        ([str(run), "--metric", "eval/nope"], "metric 'eval/nope' is in none of the runs"),
        ([str(run), "--x", "updates"], "--x 'updates' is not allowed"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path)], "has no metrics.jsonl"),
    ]
    for argv, message in cases:
        assert plot.main([*argv, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_timing_labels_lines_with_steps_wall_time_and_sps_and_adds_a_clock_axis(tmp_path: Path) -> None:
    """`--timing`: a line's label ends with its env steps, wall time and env steps/s (the mean over its seeds); a
    single run gets a top axis of wall-clock minutes."""
    steps = [1000, 2000, 3000, 4000]
    run = make_run(tmp_path, "one", 1e-3, 0, [(s, s / 10) for s in steps])  # last line: 4,007 env steps at 4 s
    assert timing_label([run]) == "(4,007 env steps in 4 s, 1,002 env steps/s)"
    other = make_run(tmp_path, "two", 1e-3, 1, [(2 * s, 1.0) for s in steps])  # 8,007 at 8 s
    assert timing_label([run, other]) == "(6,007 env steps in 6 s, 1,001 env steps/s)"
    plain, timed = tmp_path / "plain.png", tmp_path / "timed.png"
    assert plot.main([str(run), "--out", str(plain)]) == 0
    assert plot.main([str(run), "--out", str(timed), "--timing"]) == 0
    a, b = (np.asarray(Image.open(p).convert("L")) for p in (plain, timed))
    assert a.shape == b.shape
    # The axes' top spine (the first row that is mostly dark) moves down to make room for the clock axis.
    spine_a, spine_b = (int(np.argmax((x < 128).mean(axis=1) > 0.5)) for x in (a, b))
    assert spine_b > spine_a + 20, (spine_a, spine_b)
