"""One `jax.profiler` window of a run (`--jax-profile SECONDS`): XLA's own op timings, from the first learner update
for a few seconds, written under `<experiment>/jax_profile/` for Perfetto or TensorBoard's profile plugin."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax


class JaxProfileWindow:
    """Opens the window at the first `tick` that sees a learner update and closes it when `seconds` are up or the
    run ends (`tick(..., stop=True)`). Closing a trace takes seconds on a CPU.

    Args:
        folder: where the trace goes.
        seconds: the window's length; 0 opens none (only the lead process profiles).
        log: says where the trace is once written.
    """

    def __init__(self, folder: Path, seconds: float, log: Callable[[str], None] = print) -> None:
        self.folder, self.seconds, self.log = folder, seconds, log
        self.until: float | None = None  # while the window is open: when it closes
        self.done = seconds <= 0  # the window was closed, or none is wanted

    def tick(self, updates: int, stop: bool = False) -> None:
        if self.until is None:
            if self.done or stop or updates == 0:
                return
            jax.profiler.start_trace(str(self.folder))
            self.until = time.monotonic() + self.seconds
        elif stop or time.monotonic() >= self.until:
            jax.profiler.stop_trace()
            self.until, self.done = None, True
            self.log(f"jax profile: {self.folder} (open the trace.json.gz in ui.perfetto.dev)")
