"""Draws the data-flow graph of a run (docs/dataflow.png): the roles, the data path between them, and what each
hands the next. Run from the repository root: `python scripts/draw_dataflow.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "dataflow.png"

BOXES = {  # name: (x, y, width, height, title, detail, colour)
    "envs": (0.2, 4.2, 2.6, 1.3, "EnvPool / Python envs", "recv a batch, send actions\n(async, C++ threads or\nworker processes)", "#e8f1fb"),
    "actors": (3.6, 4.2, 2.8, 1.3, "actor threads", "jitted policy on the actor device\n(count per device, sharing\none parameter copy)", "#dcecc8"),
    "replay": (7.2, 4.2, 2.8, 1.3, "replay (host)", "one lock-free partition per actor\nn-step, priorities, frames once", "#fdebd0"),
    "sampler": (10.8, 4.2, 2.8, 1.3, "sampler threads", "gather [K, B] into staging,\ndevice_put while the learner\ntrains on the previous batch", "#fdebd0"),
    "learner": (10.8, 1.2, 2.8, 1.5, "learner (mesh of devices)", "K fused updates per jitted call\n(lax.scan, shard_map, state\ndonated, dispatched async)", "#f9d9d9"),
    "store": (7.2, 1.2, 2.8, 1.5, "publisher -> ParamStore", "a version is published once\ncomputed: one copy per actor\ndevice, exact version stamp", "#e6dcf5"),
    "segments": (3.6, -1.6, 2.8, 1.3, "on-policy path (PPO)", "segments [N, T+1] put on the\nlearner devices by the actor,\nno replay, no sampler", "#dcecc8"),
    "eval": (0.2, 1.2, 2.6, 1.5, "evaluator / driver", "evaluations, metrics, W&B,\ncheckpoints, signals", "#eeeeee"),
}

ARROWS = [  # (from, to, label, (from side), (to side))
    ("envs", "actors", "obs, reward, first", "right", "left"),
    ("actors", "envs", "actions", "left", "right"),
    ("actors", "replay", "transitions", "right", "left"),
    ("replay", "sampler", "sequence numbers", "right", "left"),
    ("sampler", "learner", "BatchQueue", "bottom", "top"),
    ("learner", "store", "actor params", "left", "right"),
    ("store", "actors", "newest computed version", "top", "bottom"),
    ("learner", "replay", "PriorityFeedback", "top", "bottom"),
    ("actors", "segments", "", "bottom", "top"),
    ("segments", "learner", "segments (BatchQueue)", "right", "bottom"),
    ("store", "eval", "learner state copies, taken between calls", "left", "right"),
]


def anchor(name: str, side: str) -> tuple[float, float]:
    x, y, w, h = BOXES[name][:4]
    return {"left": (x, y + h / 2), "right": (x + w, y + h / 2), "top": (x + w / 2, y + h),
            "bottom": (x + w / 2, y)}[side]


def main() -> int:
    fig, ax = plt.subplots(figsize=(14, 8.6))
    ax.set_xlim(0, 14)
    ax.set_ylim(-2.4, 6.3)
    ax.axis("off")
    for name, (x, y, w, h, title, detail, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#555555", lw=1.2))
        ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=10.5, weight="bold")
        ax.text(x + w / 2, y + h - 0.5, detail, ha="center", va="top", fontsize=8.2, linespacing=1.25)
    offsets = {("envs", "actors"): 0.25, ("actors", "envs"): -0.25}
    for src, dst, label, a, b in ARROWS:
        (x0, y0), (x1, y1) = anchor(src, a), anchor(dst, b)
        dy = offsets.get((src, dst), 0.0)
        style = "arc3,rad=0.0"
        if (src, dst) == ("segments", "learner"):
            style = "angle,angleA=0,angleB=90,rad=0"
        if (src, dst) == ("actors", "segments"):
            x0, x1 = x0 - 0.9, x1 - 0.9
        if (src, dst) == ("learner", "replay"):
            x0, x1 = x0 - 0.6, x1 + 0.6
        ax.add_patch(FancyArrowPatch((x0, y0 + dy), (x1, y1 + dy), arrowstyle="-|>", mutation_scale=14, lw=1.3,
                                     color="#333333", connectionstyle=style))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy + 0.12, label, ha="center", va="bottom", fontsize=8,
                    style="italic", color="#333333")
    ax.text(7.0, 6.05, "jaxrl_dist: one run's data flow (replay path above; the on-policy path feeds the learner's "
            "queue directly)", ha="center", fontsize=11.5)
    ax.text(7.0, -2.2, "limiter: replay ratio both ways (replay) or one update per segment (on-policy); every "
            "blocking call has a timeout; a failed role stops the run", ha="center", fontsize=8.5, color="#444444")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
