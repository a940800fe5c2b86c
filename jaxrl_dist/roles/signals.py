"""The signals of a training process, handled from start-up to exit, and how the process ends.

SIGINT (Ctrl-C), SIGTERM (preemption, `scancel`) and SIGUSR1 (what Slurm sends before a job's time limit,
`--signal=B:USR1@margin`) are caught by one handler for the whole life of `train`, so none of them can kill the
process between the end of training and its last checkpoint. What a signal does depends on what the process does:

* start-up and export (`Signals.interruptible`): nothing is being trained, so the first signal raises `Interrupted`
  in the main thread; `train` says what was left undone and exits with 128 + the signal.
* a run (`Signals.routed`): the first signal stops the roles and the driver saves a checkpoint (an evaluation in
  flight is cut short), then `train` exits with 128 + the signal (138 after SIGUSR1, which the sbatch script answers
  with `scontrol requeue`).
* a second signal says what the process is waiting for (the save, say) and waits on; a third exits at once, without
  it: an unfinished orbax save is never taken for the latest checkpoint.

A role thread that did not stop (inside a long XLA compilation, an env that hangs) would abort the interpreter at exit
(`terminate called after throwing an instance of ''`: the thread is unwound through C++ as Python finalizes), so
`leave` ends such a process with `os._exit` once its output is flushed and its exit handlers have run. Only the
threads that run the run's own work count (`watch`: the roles, evaluations, the precompilations): a process without
one left exits normally, MPI's finalization included, which the ranks of a group run wait on for each other.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Interrupted(BaseException):
    """A signal cut start-up or export short (a BaseException, so that `except Exception` does not swallow it).

    Attributes:
        signum: the signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Signals:
    """The process's handler of SIGINT, SIGTERM and SIGUSR1 (installed from the main thread; elsewhere it only
    counts, and nothing is installed).

    Attributes:
        signum: the first signal received, 0 before one.
        event: set by the first signal (an evaluation in flight watches it).
        doing: what the process is busy with, for the message of a second signal.
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.signum, self.count = 0, 0
        self.event = threading.Event()
        self.doing = "starting up"
        self._say = say or _to_stderr
        self._route: Callable[[int], None] | None = None  # while a run is driven: how the first signal stops it
        self._old: dict[int, Any] = {}

    def install(self) -> Signals:
        if threading.current_thread() is threading.main_thread() and not self._old:
            for sig in HANDLED:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Puts the handlers back that were there before `install`."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    @contextlib.contextmanager
    def routed(self, first: Callable[[int], None]) -> Iterator[None]:
        """While a run is driven: the first signal calls `first(signum)` (a signal that came before is passed on at
        once). Later signals are handled as always."""
        self._route = first
        try:
            if self.signum:
                first(self.signum)
            yield
        finally:
            self._route = None

    @contextlib.contextmanager
    def interruptible(self, doing: str) -> Iterator[None]:
        """While nothing needs saving (`doing`: start-up, an export): the first signal raises `Interrupted` here; one
        that came before raises it on entry."""
        with self.busy(doing), self.routed(self._raise):
            yield

    @contextlib.contextmanager
    def busy(self, doing: str) -> Iterator[None]:
        """What the process does meanwhile, for the message of a second signal."""
        before, self.doing = self.doing, doing
        try:
            yield
        finally:
            self.doing = before

    def say(self, line: str) -> None:
        """Prints a line from a signal handler too (see `_to_stderr`)."""
        self._say(line)

    def _raise(self, signum: int) -> None:
        raise Interrupted(signum)

    def _handle(self, signum: int, frame: Any = None) -> None:
        self.count += 1
        name = signal_name(signum)
        if self.count == 1:
            self.signum = signum
            self.event.set()
            if self._route is not None:
                self._route(signum)
            return
        if self.count == 2:
            self._say(f"{name} again: still {self.doing}; a third signal exits at once without finishing it")
            return
        self._say(f"{name} a third time: exiting now, while {self.doing}")
        leave(128 + signum, force=True)


def _to_stderr(line: str) -> None:
    """One line to stderr, written straight to its file descriptor: a signal handler runs between two bytecodes of
    the main thread, which may be inside a `print` to the same buffered stream (a reentrant call would raise)."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode(errors="replace"))


_WATCHED: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
PRECOMPILE_SUFFIX = "-precompile"  # the graph builder's compilation threads (roles/graph.py `_precompile`)


def watch(thread: threading.Thread) -> threading.Thread:
    """Counts `thread` among those that may be inside XLA or an env when the process ends (see `leave`)."""
    _WATCHED.add(thread)
    return thread


def busy_threads() -> list[str]:
    """The run's own threads that are still running: role threads that did not stop, evaluations, compilations."""
    return [t.name for t in threading.enumerate()
            if t.is_alive() and (t in _WATCHED or t.name.endswith(PRECOMPILE_SUFFIX))]


def leave(code: int, force: bool = False) -> int:
    """Returns `code` for a normal interpreter exit, or ends the process with it now when another thread is still
    running: the exit handlers run (as they would) and stdout and stderr are flushed, then `os._exit` skips the
    interpreter's finalization, which would abort the process while such a thread is inside C++. `force` (a third
    signal) ends it at once, flushing the output only."""
    if not force and not busy_threads():
        return code
    if not force:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
