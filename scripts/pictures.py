"""Draws the pictures of the docs that are not learning curves (`scripts/make_pictures.sh` calls it):

- `python scripts/pictures.py scaling RESULT.json OUT.png`: the scaling plot of one `bench scaling --json` result,
  learner efficiency on 1..N devices beside the per-group update rate of MPI groups.
- `python scripts/pictures.py gif VIDEO OUT.gif`: an evaluation episode (the GIF or MP4 that `evaluate --video`
  wrote) shrunk for a README: every `--every`-th frame, at most `--max-side` pixels, under `--max-bytes`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageSequence  # noqa: E402


def _by_count(table: dict[str, Any]) -> tuple[list[int], list[Any]]:
    counts = sorted(int(n) for n in table)
    return counts, [table[str(n)] if str(n) in table else table[n] for n in counts]


def draw_scaling(result: dict[str, Any], out: Path) -> None:
    """Left: weak and strong efficiency of the learner call on 1..N devices; right: updates/s per group of one
    group, G independent runs and G synchronised groups (one bar each), with the weak efficiency on the bar."""
    groups = result["groups"]
    fig, axes = plt.subplots(1, 2 if isinstance(groups, dict) else 1, figsize=(10, 3.6), squeeze=False)
    ax = axes[0][0]
    where = f"{result['platform']}" + (" (fake devices sharing 2 cores)" if result["fake_devices"] else "")
    for key, label in (("weak_efficiency", f"weak ({result['batch_per_device']} per device)"),
                       ("strong_efficiency", f"strong ({result['global_batch']} in all)")):
        counts, eff = _by_count(result[key])
        ax.plot(counts, eff, marker="o", label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("learner devices")
    ax.set_ylabel("efficiency")
    ax.set_title(f"learner call, {result['updates_per_call']} updates per call\non {where}", fontsize=9)
    ax.legend(fontsize=8)
    if isinstance(groups, dict):
        ax = axes[0][1]
        runs = groups["runs"]
        base = min(int(n) for mode in runs.values() for n in mode)
        lone = next(iter(runs.values()))
        lone = lone.get(str(base), lone.get(base))  # type: ignore[arg-type]
        bars = [("1 group", lone["ups"], 1.0)]
        for n, f in zip(*_by_count(groups.get("independent", {}))):
            bars.append((f"{n} independent\n(no sync)", f["ups"], f["weak_efficiency"]))
        for mode, table in runs.items():
            for n, f in zip(*_by_count(table)):
                if n != base:
                    bars.append((f"{n} groups\nsync: {mode}", f["ups"], f["weak_efficiency"]))
        x = np.arange(len(bars))
        ax.bar(x, [b[1] for b in bars], color=["#999999"] + ["#7fb3d5"] * (len(bars) - 1))
        for i, (_, ups, eff) in enumerate(bars):
            ax.text(i, ups, f"{eff:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
        ax.set_ylabel("updates/s per group")
        ax.set_title(f"MPI groups (mpirun, one core each), {groups['steps_per_group']:,} env steps per group\n"
                     "label: updates/s kept against 1 group", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def shrink_gif(video: Path, out: Path, every: int, max_side: int, max_bytes: int) -> None:
    """Writes every `every`-th frame of `video`, scaled to at most `max_side` pixels, as a looping GIF at the
    video's speed; halves the frame rate again while the file is larger than `max_bytes`."""
    if video.suffix == ".mp4":
        import imageio.v3 as iio  # only for an MP4 (where imageio-ffmpeg is installed)

        frames = [Image.fromarray(f) for f in iio.imread(video)]
        duration = 1000 / 30
    else:
        with Image.open(video) as im:
            duration = im.info.get("duration", 33)
            frames = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
    w, h = frames[0].size
    scale = min(1.0, max_side / max(w, h))
    frames = [f.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS) for f in frames]
    while True:
        kept = frames[::every]
        buf = io.BytesIO()
        kept[0].save(buf, format="GIF", save_all=True, append_images=kept[1:], loop=0,
                     duration=max(20, round(duration * every)), optimize=True)
        if buf.tell() <= max_bytes or len(kept) < 20:
            break
        every *= 2
    out.write_bytes(buf.getvalue())
    print(f"{out}: {len(kept)} of {len(frames)} frames, {kept[0].size[0]}x{kept[0].size[1]}, {buf.tell():,} bytes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scaling", help="draw a bench scaling --json result")
    s.add_argument("result", type=Path)
    s.add_argument("out", type=Path)
    g = sub.add_parser("gif", help="shrink an evaluation video into a README GIF")
    g.add_argument("video", type=Path)
    g.add_argument("out", type=Path)
    g.add_argument("--every", type=int, default=2, help="keep every N-th frame")
    g.add_argument("--max-side", type=int, default=300, help="largest side in pixels")
    g.add_argument("--max-bytes", type=int, default=1_000_000, help="keep fewer frames until the GIF fits")
    args = p.parse_args(argv)
    if args.what == "scaling":
        draw_scaling(json.loads(args.result.read_text()), args.out)
    else:
        shrink_gif(args.video, args.out, args.every, args.max_side, args.max_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
