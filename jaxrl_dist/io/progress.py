"""Training progress on the console: a live bar in a terminal, plain periodic lines in logs.

Slurm and CI capture stdout to files, where a live bar turns into megabytes of carriage returns; there (and
with `quiet`) one self-contained line is printed every `print_every_s` seconds instead, plus one at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

# Labels and formats of the fields the trainer reports; any other field prints as `name value`.
_FIELD_FORMATS = {"sps": ("sps", "{:.0f}"), "ups": ("ups", "{:.0f}"), "ret": ("return", "{:.1f}")}
_RICH_REFRESH_S = 0.25  # the bar is redrawn (and fed) at most 4 times a second


def _format_duration(seconds: float) -> str:
    """`42s`, `5m03s`, `2h07m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_fields(fields: dict[str, float | None]) -> str:
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        label, fmt = _FIELD_FORMATS.get(name, (name, "{:.4g}"))
        parts.append(f"{label} {fmt.format(value)}")
    return "  ".join(parts)


class Progress:
    """Shows training progress: call `update` from the driver loop as often as you like.

    Usage::

        with Progress(cfg.total_env_steps, quiet=args.quiet) as progress:
            while ...:
                progress.update(env_steps, sps=sps, ups=ups, ret=last_return)

    A rich live bar when stdout is a terminal and not `quiet`; otherwise a line like
    `[  12.3s] env_steps 40000/100000 (40%)  sps 25000  ups 800  return 312.5  eta 20s` every `print_every_s`
    seconds and once on exit. The ETA uses the last reported `sps`, else the average rate since entering.

    Args:
        total_env_steps: The run's length in env steps.
        quiet: Never draw the live bar, even in a terminal.
        print_every_s: Seconds between plain lines.
        silent: No progress lines at all, only `log` messages (groups other than 0: group 0 reports the run).
    """

    def __init__(self, total_env_steps: int, *, quiet: bool, print_every_s: float = 10.0, silent: bool = False
                 ) -> None:
        self.total = int(total_env_steps)
        self.quiet, self.silent = quiet or silent, silent
        self.print_every_s = print_every_s
        self._fields: dict[str, float | None] = {}
        self._steps = 0
        self._first_steps: int | None = None  # steps at the first update: a resumed run starts above zero
        self._start = time.monotonic()
        self._last_emit = self._start
        self._print_lock = threading.Lock()
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        self._start = self._last_emit = time.monotonic()
        if not self.quiet and sys.stdout.isatty():
            self._start_rich()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._rich is not None:
            self._push_rich()
            self._rich.stop()
            self._rich = None
        elif not self.silent:
            self._print(self.status_line())

    def _start_rich(self) -> None:
        # Imported here: rich is only needed in a terminal.
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._rich = RichProgress(
            TextColumn("env steps"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            refresh_per_second=1 / _RICH_REFRESH_S,
        )
        self._task = self._rich.add_task("train", total=self.total, stats="", eta="?")
        self._rich.start()

    def update(self, env_steps: int, **fields: float | None) -> None:
        """Records progress; redraws or prints only when due, so calling it every iteration is cheap.

        Args:
            env_steps: Environment steps so far.
            **fields: Numbers to show, e.g. `sps=`, `ups=` (updates per second), `ret=` (last episode return);
                None hides a field. A field keeps its last value until updated again.
        """
        self._steps = int(env_steps)
        if self._first_steps is None:
            self._first_steps = self._steps
        self._fields.update(fields)
        now = time.monotonic()
        if self._rich is not None:
            if now - self._last_emit >= _RICH_REFRESH_S:
                self._last_emit = now
                self._push_rich()
        elif now - self._last_emit >= self.print_every_s and not self.silent:
            self._last_emit = now
            self._print(self.status_line())

    def _push_rich(self) -> None:
        self._rich.update(
            self._task, completed=self._steps, stats=_format_fields(self._fields), eta=self._eta_text()
        )

    def _eta_text(self) -> str:
        remaining = max(0, self.total - self._steps)
        if remaining == 0:
            return "0s"
        rate = self._fields.get("sps")
        if not rate or rate <= 0:
            elapsed = time.monotonic() - self._start
            done = self._steps - (self._first_steps or 0)
            rate = done / elapsed if elapsed > 0 and done > 0 else None
        return _format_duration(remaining / rate) if rate else "?"

    def status_line(self) -> str:
        """The plain progress line for the current state (what quiet mode prints)."""
        elapsed = time.monotonic() - self._start
        percent = 100.0 * self._steps / self.total if self.total > 0 else 100.0
        parts = [f"[{elapsed:6.1f}s] env_steps {self._steps}/{self.total} ({percent:.0f}%)"]
        stats = _format_fields(self._fields)
        if stats:
            parts.append(stats)
        parts.append(f"eta {self._eta_text()}")
        return "  ".join(parts)

    def log(self, msg: str) -> None:
        """Prints `msg` on its own line; with the live bar, above it (the bar is redrawn below). Thread-safe."""
        if self._rich is not None:
            self._rich.console.print(msg, markup=False, highlight=False)
        else:
            self._print(msg)

    def _print(self, line: str) -> None:
        # sys.stdout is looked up on each call, so redirection (and pytest's capsys) is honoured.
        with self._print_lock:
            print(line, file=sys.stdout, flush=True)
