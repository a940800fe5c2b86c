"""Profiling traces in the Chrome trace-event format, which ui.perfetto.dev (and chrome://tracing) open.

`Timers.span` feeds a `TraceRecorder` when a run is profiled (`--profile`): one complete event per span, with the
role's thread, so the trace shows every actor step, replay sample and host-to-device copy, learner update and
parameter publish on its own track. Without profiling, spans only accumulate their per-stage means.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

MAX_EVENTS = 2_000_000  # about 200 MB of JSON; later spans are counted, not kept


class TraceRecorder:
    """Collects spans from any thread; `write` saves them as `{"traceEvents": [...]}`.

    Appending to a list is atomic under the GIL, so recording takes no lock.
    """

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.origin = time.perf_counter()
        self.events: list[tuple[str, int, float, float]] = []
        self.dropped = 0
        self.max_events = max_events
        self.pid = os.getpid()
        self._threads: dict[int, str] = {}

    def record(self, name: str, start: float, end: float) -> None:
        """One span of the calling thread; `start` and `end` from `time.perf_counter()`."""
        if len(self.events) >= self.max_events:
            self.dropped += 1
            return
        thread = threading.current_thread()
        tid = thread.ident or 0
        if tid not in self._threads:
            self._threads[tid] = thread.name
        self.events.append((name, tid, start, end))

    def to_json(self) -> dict[str, Any]:
        """The trace-event document: complete ("X") events in microseconds, plus thread and process names."""
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": self.pid, "tid": 0, "args": {"name": "jaxrl_dist"}}
        ]
        meta += [{"name": "thread_name", "ph": "M", "pid": self.pid, "tid": tid, "args": {"name": name}}
                 for tid, name in self._threads.items()]
        spans = [
            {"name": name, "cat": name.split("/", 1)[0], "ph": "X", "pid": self.pid, "tid": tid,
             "ts": round((start - self.origin) * 1e6, 3), "dur": round((end - start) * 1e6, 3)}
            for name, tid, start, end in list(self.events)
        ]
        return {"traceEvents": meta + spans, "displayTimeUnit": "ms",
                "otherData": {"dropped_events": self.dropped, "max_events": self.max_events}}

    def write(self, path: Path) -> Path:
        """Writes the trace atomically (a temporary name, then a rename) and returns its path."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, separators=(",", ":"))
        os.replace(tmp, path)
        return path
