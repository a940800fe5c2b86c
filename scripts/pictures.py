"""Draws the pictures of the docs that are not learning curves (`scripts/make_pictures.sh` calls it):

- `python scripts/pictures.py scaling OUT.png RESULT.json=NOTE ... [--keep ALL.json]`: the scaling plot of
  `bench scaling --json` results (NOTE: how the params groups of each run average): learner efficiency on 1..N
  devices beside the efficiency of MPI groups per sync mode. `scaling OUT.png ALL.json` redraws from a `--keep` file.
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
import numpy as np
from PIL import Image, ImageSequence

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _by_count(table: dict[str, Any]) -> tuple[list[int], list[Any]]:
    """The values of a `{count: value}` table of the JSON (string keys), in order of the count."""
    counts = sorted(int(n) for n in table)
    return counts, [table[str(n)] for n in counts]


def draw_scaling(results: list[dict[str, Any]], out: Path) -> None:
    """Left: weak and strong efficiency of the learner call on 1..N devices (the first result); right: the weak
    efficiency of G groups per sync mode, each against one group of its own bench run (`ups_G / ups_1`), and of G
    independent runs, with each bar's updates/s per group written on it.

    Args:
        results: `{"note": how its params groups average, "result": bench scaling --json}` per bench run, in
            bar order.
        out: the PNG to write.
    """
    first = results[0]["result"]
    with_groups = [r for r in results if isinstance(r["result"]["groups"], dict)]
    fig, axes = plt.subplots(1, 2 if with_groups else 1, figsize=(11.5, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.4]} if with_groups else None)
    ax = axes[0][0]
    where = first["platform"] + (" (8 fake devices sharing 2 cores)" if first["fake_devices"] else "")
    for key, label in (("weak_efficiency", f"weak ({first['batch_per_device']} per device)"),
                       ("strong_efficiency", f"strong ({first['global_batch']} in all)")):
        counts, efficiency = _by_count(first[key])
        ax.plot(counts, efficiency, marker="o", label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("learner devices")
    ax.set_ylabel("efficiency")
    ax.set_title(f"learner call ({first['updates_per_call']} updates per call)\non {where}", fontsize=9)
    ax.legend(fontsize=8)
    if with_groups:
        ax = axes[0][1]
        bars: list[tuple[str, float, float]] = []  # label, weak efficiency, updates/s per group
        for run in with_groups:
            groups, note = run["result"]["groups"], run["note"]
            for n, f in zip(*_by_count(groups.get("independent", {}))):
                if not any(b[0].startswith(f"{n} independent") for b in bars):
                    bars.append((f"{n} independent\n(no sync)", f["weak_efficiency"], f["ups"]))
            k = run["result"]["updates_per_call"]
            for mode, table in groups["runs"].items():
                how = "every update" if mode == "grads" else note  # the note says how params are averaged
                for n, f in zip(*_by_count(table)):
                    if n > 1:
                        bars.append((f"{n} groups, {mode}\n{how}, K {k}", f["weak_efficiency"], f["ups"]))
        x = np.arange(len(bars))
        ax.bar(x, [b[1] for b in bars], color=["#999999" if "independent" in b[0] else "#7fb3d5" for b in bars])
        for i, (_, eff, ups) in enumerate(bars):
            ax.text(i, eff, f"{eff:.2f}\n{ups:,.0f}/s", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 1.3)
        ax.set_xticks(x, [b[0] for b in bars], fontsize=7)
        ax.set_ylabel("updates/s per group vs 1 group")
        steps = with_groups[0]["result"]["groups"]["steps_per_group"]
        ax.set_title(f"MPI groups (mpirun, one core each, {steps:,} env steps per group)\n"
                     "on each bar: efficiency, updates/s per group", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def read_scaling(items: list[str]) -> list[dict[str, Any]]:
    """`PATH=NOTE` items (a bench scaling --json result each), or one file that `--keep` wrote."""
    if len(items) == 1 and "=" not in items[0]:
        return json.loads(Path(items[0]).read_text())
    runs = []
    for item in items:
        path, _, note = item.partition("=")
        runs.append({"note": note, "result": json.loads(Path(path).read_text().strip().splitlines()[-1])})
    return runs


def shrink_gif(video: Path, out: Path, every: int, max_side: int, max_bytes: int) -> None:
    """Writes every `every`-th frame of `video`, scaled to at most `max_side` pixels, as a looping GIF at the
    video's speed; halves the frame rate again while the file is larger than `max_bytes`."""
    if video.suffix == ".mp4":
        import imageio_ffmpeg  # what wrote it (a dependency of jaxrl_dist)

        reader = imageio_ffmpeg.read_frames(str(video))
        meta = next(reader)
        size, duration = meta["size"], 1000 / meta["fps"]
        frames = [Image.frombytes("RGB", size, f) for f in reader]
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
    s = sub.add_parser("scaling", help="draw bench scaling --json results")
    s.add_argument("out", type=Path)
    s.add_argument("results", nargs="+",
                   help="PATH=NOTE per bench run (NOTE: how its params groups average), or a --keep file")
    s.add_argument("--keep", type=Path, help="also write the results with their notes to this JSON file")
    g = sub.add_parser("gif", help="shrink an evaluation video into a README GIF")
    g.add_argument("video", type=Path)
    g.add_argument("out", type=Path)
    g.add_argument("--every", type=int, default=2, help="keep every N-th frame")
    g.add_argument("--max-side", type=int, default=300, help="largest side in pixels")
    g.add_argument("--max-bytes", type=int, default=1_000_000, help="keep fewer frames until the GIF fits")
    args = p.parse_args(argv)
    if args.what == "scaling":
        runs = read_scaling(args.results)
        if args.keep:
            args.keep.write_text(json.dumps(runs, indent=1) + "\n")
        draw_scaling(runs, args.out)
    else:
        shrink_gif(args.video, args.out, args.every, args.max_side, args.max_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
