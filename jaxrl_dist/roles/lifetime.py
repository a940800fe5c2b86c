"""Managed role threads: one stop flag, one shutdown path (also taken on error), per-stage timers."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections import defaultdict
from typing import Any, Callable, Iterator

from jaxrl_dist.errors import RoleError
from jaxrl_dist.io.trace import TraceRecorder


class Lifetime:
    """Owns the role threads of a run.

    A role that raises records its traceback and sets the stop flag, so every other role's loop (which checks
    `stop_event` at least every 100 ms) ends; the driver then raises `RoleError` with that traceback.
    """

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.errors: list[RoleError] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def spawn(self, name: str, target: Callable[[], Any]) -> threading.Thread:
        """Starts `target` on a daemon thread named `name` (daemon: a stuck C call never blocks process exit)."""

        def body() -> None:
            try:
                target()
            except BaseException:  # noqa: BLE001 - any failure of a role must stop the run, with its traceback
                self.fail(name, traceback.format_exc())

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def fail(self, role: str, tb: str) -> None:
        with self._lock:
            self.errors.append(RoleError(role, tb))
        self.stop_event.set()

    def check(self) -> None:
        """Raises the first role error, if any."""
        if self.errors:
            raise self.errors[0]

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Sets the stop flag and joins every thread; returns the names of threads still alive after `timeout`."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


class Timers:
    """Accumulated seconds and counts per stage (`actor/step`, `learner/update`, ...), safe across threads.

    Args:
        trace: where every span is also recorded (a profiled run); None keeps only the per-stage sums.
    """

    def __init__(self, trace: TraceRecorder | None = None) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.trace = trace

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            # += on a dict entry is not atomic, but each stage is timed by one thread, so no update is lost.
            self.total[name] += end - start
            self.count[name] += 1
            if self.trace is not None:
                self.trace.record(name, start, end)

    def snapshot(self) -> dict[str, float]:
        """Mean milliseconds per stage since the last snapshot, as `time/<stage>_ms` metrics."""
        out = {}
        for name in list(self.total):
            n = self.count[name]
            if n:
                out[f"time/{name}_ms"] = 1000.0 * self.total[name] / n
            self.total[name] = 0.0
            self.count[name] = 0
        return out
