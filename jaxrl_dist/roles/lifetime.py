"""Managed role threads: one stop flag, one shutdown path (also taken on error), per-stage timers."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections import defaultdict
from typing import Any, Callable, Iterator

from jaxrl_dist.errors import RoleError, UserError
from jaxrl_dist.io.trace import TraceRecorder
from jaxrl_dist.roles.signals import watch


class Lifetime:
    """Owns the role threads of a run.

    A role that raises records its traceback and sets the stop flag, so every other role's loop (which checks
    `stop_event` at least every 100 ms) ends; the driver then raises `RoleError` with that traceback, or the role's
    `UserError` itself (bad input found by a role, e.g. observations that are no frame stacks: one line, exit 2).
    """

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.errors: list[RoleError | UserError] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def spawn(self, name: str, target: Callable[[], Any]) -> threading.Thread:
        """Starts `target` on a daemon thread named `name` (daemon: a stuck C call never blocks process exit)."""

        def body() -> None:
            try:
                target()
            except UserError as err:
                self.fail(name, str(err), err)
            except BaseException:  # noqa: BLE001 - any failure of a role must stop the run, with its traceback
                self.fail(name, traceback.format_exc())

        thread = watch(threading.Thread(target=body, name=name, daemon=True))
        self.threads.append(thread)
        thread.start()
        return thread

    def fail(self, role: str, tb: str, user_error: UserError | None = None) -> None:
        with self._lock:
            self.errors.append(user_error or RoleError(role, tb))
        self.stop_event.set()

    def check(self) -> None:
        """Raises the first role error, if any."""
        if self.errors:
            raise self.errors[0]

    def stop(self, timeout: float = 10.0, timers: Timers | None = None, say: Callable[[str], None] | None = None
             ) -> list[str]:
        """Sets the stop flag and joins every thread; returns the names of threads still alive after `timeout`.

        With `say`, a role that has not stopped after a second is named, with what it is doing (its open span in
        `timers`), so a wait on a long call is never silent.
        """
        self.stop_event.set()
        start = time.monotonic()
        for thread in self.threads:
            thread.join(max(0.0, start + min(1.0, timeout) - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        if alive and say is not None and timeout > 1.0:
            doing = timers.doing() if timers is not None else {}
            say(f"stopping: waiting up to {timeout:.0f} s for {', '.join(doing.get(t.name, t.name) for t in alive)}")
        for thread in alive:
            thread.join(max(0.0, start + timeout - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


class Timers:
    """Accumulated seconds and counts per stage (`actor/step`, `learner/update`, ...), safe across threads, and the
    span each thread is in now.

    Args:
        trace: where every span is also recorded (a profiled run); None keeps only the per-stage sums.
    """

    def __init__(self, trace: TraceRecorder | None = None) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.trace = trace
        self._lock = threading.Lock()  # `take` swaps the sums while roles add to them
        self._open: dict[int, tuple[str, float]] = {}  # thread id -> its outermost open span and its start

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        thread = threading.get_ident()
        outer = thread not in self._open
        if outer:
            self._open[thread] = (name, start)
        try:
            yield
        finally:
            end = time.perf_counter()
            if outer:
                self._open.pop(thread, None)
            with self._lock:
                self.total[name] += end - start
                self.count[name] += 1
            if self.trace is not None:
                self.trace.record(name, start, end)

    def take(self) -> dict[str, tuple[float, int]]:
        """Seconds and count per stage since the last `take`, at once (no concurrent addition is lost)."""
        with self._lock:
            total, count = self.total, self.count
            self.total, self.count = defaultdict(float), defaultdict(int)
        return {name: (total[name], count[name]) for name in total if count[name]}

    def snapshot(self) -> dict[str, float]:
        """Mean milliseconds per stage since the last snapshot, as `time/<stage>_ms` metrics."""
        return {f"time/{name}_ms": 1000.0 * seconds / n for name, (seconds, n) in self.take().items()}

    def doing(self) -> dict[str, str]:
        """What each thread in a span is doing now, by thread name: `learner (learner/update for 35 s)`."""
        now, names = time.perf_counter(), {t.ident: t.name for t in threading.enumerate()}
        return {names[t]: f"{names[t]} ({span} for {now - start:.0f} s)"
                for t, (span, start) in list(self._open.items()) if t in names}
