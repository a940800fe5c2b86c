"""Python envs stepped in worker processes (`env.vector: subprocess`), with the inline backend's semantics.

Each of W workers (`worker.py`) owns the envs i with i % W == w, built from the same picklable `EnvFactory` and
stepped by the same `serial.EnvStepper` as the inline backend: autoreset, time limit, seeding (env i gets seed + i),
result checks, `score` and `game_over` are those of `SerialVecEnv`, batch for batch (tests/test_envs.py runs both
through the same checks and compares their batches). The parent keeps the inline FIFO: `send` posts each worker its
share of the actions, `recv` returns the batch_size envs sent least recently once their workers have stepped them.
A batch spread over the workers is stepped in parallel; with batch_size < num_envs, the workers step one batch while
the actor computes the actions of the other.

Transport: one block of shared memory (an anonymous file) holds a row per env id of the actions, observations,
rewards and flags. `send` writes the actions' rows and posts each worker the list of its env ids over a socket pair
(a short message: nothing large is pickled); the worker steps those envs, writes their result rows and replies;
`recv` copies the rows out. An env's rows are only written again after its next send, which comes after the recv
that copied them. Workers are fresh interpreters (`python -m jaxrl_dist.envs.worker`): not forked, since the parent
runs JAX's threads, and not multiprocessing's spawn, which imports the parent's main module again (all of JAX for
`python -m jaxrl_dist.train`).

Not gymnasium's AsyncVectorEnv: it steps every env in lock step (no batch_size < num_envs), runs one process per env,
and would still need this module's time limit, seeding and checks around its NEXT_STEP autoreset.

Workers never hang a run: every wait has a deadline (`recv`'s timeout, START_TIMEOUT_S to build the envs), a worker
that raises reports its traceback and exits, one that dies is noticed on its socket, `close` kills what has not
exited after CLOSE_TIMEOUT_S, and a worker whose parent died exits by itself. A failure closes every worker and raises
one line (`EnvWorkerError`, or the worker's `UserError`) chained to the worker's traceback (`RemoteTraceback`).
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from jaxrl_dist.envs.loading import EnvFactory
from jaxrl_dist.envs.serial import await_sends
from jaxrl_dist.envs.spec import EnvSpec, StepBatch
from jaxrl_dist.errors import UserError

START_TIMEOUT_S = 300.0  # to start a worker and build its envs (a simulator may load assets)
CLOSE_TIMEOUT_S = 5.0  # for workers to close their envs and exit before they are killed
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class EnvWorkerError(RuntimeError):
    """A subprocess env worker failed or died. One line; the worker's traceback is its `__cause__`."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\n{self.tb}"


def shared_arrays(buffer: Any, spec: EnvSpec, num_envs: int) -> list[np.ndarray]:
    """Views of the shared rows in `buffer`: obs [num_envs, *obs_shape] of the spec's dtype, reward float32
    [num_envs], terminated, truncated, first bool [num_envs], actions [num_envs, *action_shape] (float32 for
    continuous actions, else int64)."""
    return [np.frombuffer(buffer, dtype, int(np.prod(shape)), offset).reshape(shape)
            for shape, dtype, offset in _layout(spec, num_envs)[0]]


def shared_size(spec: EnvSpec, num_envs: int) -> int:
    """Bytes of the block `shared_arrays` reads."""
    return _layout(spec, num_envs)[1]


def _layout(spec: EnvSpec, num_envs: int) -> tuple[list[tuple[tuple[int, ...], np.dtype, int]], int]:
    """(shape, dtype, byte offset) of each shared array, each 64-byte aligned, and the bytes of them all."""
    fields = [((num_envs, *spec.obs_shape), np.dtype(spec.obs_dtype)), ((num_envs,), np.dtype(np.float32))]
    fields += [((num_envs,), np.dtype(bool))] * 3
    action_dtype = np.dtype(np.float32 if spec.action_kind == "continuous" else np.int64)  # as `EnvStepper.actions`
    fields.append(((num_envs, *spec.action_shape), action_dtype))
    layout, offset = [], 0
    for shape, dtype in fields:
        layout.append((shape, dtype, offset))
        offset += -(-int(np.prod(shape)) * dtype.itemsize // 64) * 64
    return layout, max(offset, 64)


class _Worker:
    """One worker process, its socket, its env ids and the env ids of its sends not yet answered (oldest first)."""

    def __init__(self, index: int, ids: list[int], memory_fd: int) -> None:
        self.index, self.ids = index, ids
        self.pending: collections.deque[list[int]] = collections.deque()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jaxrl_dist.envs.worker", str(theirs.fileno()), str(memory_fd)],
                pass_fds=(theirs.fileno(), memory_fd), env=env,
            )  # fmt: skip
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())

    def describe(self) -> str:
        ids = self.ids if len(self.ids) <= 4 else [*self.ids[:3], "...", self.ids[-1]]
        return f"env worker {self.index} (envs {', '.join(str(i) for i in ids)})"


class SubprocVecEnv:
    """A `VecEnv` over Python envs stepped in `workers` processes (see the module doc).

    Thread-safe like `SerialVecEnv`: one receiving thread and any number of sending threads.

    Args:
        factory: builds the instances (in the workers).
        num_envs: number of envs.
        batch_size: envs per recv, 1..num_envs.
        seed: env i is seeded with seed + i on its first reset.
        max_episode_steps: time limit; 0 uses the env's own.
        workers: worker processes; 0 means min(os.cpu_count(), num_envs), at most num_envs are started.

    Raises:
        UserError: what building the envs raises (a factory that returns no env, unsupported spaces, ...).
        EnvWorkerError: a worker that failed otherwise, or did not build its envs within START_TIMEOUT_S.
    """

    def __init__(self, factory: EnvFactory, *, num_envs: int, batch_size: int, seed: int = 0,
                 max_episode_steps: int = 0, workers: int = 0) -> None:
        self.num_envs, self.batch_size = num_envs, batch_size
        count = min(workers or os.cpu_count() or 1, num_envs)
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._queue: collections.deque[int] = collections.deque()
        self._in_flight: set[int] = set()  # env ids sent (or reset) and not yet returned by recv
        self._ready = [False] * num_envs  # the worker has written the env's row and said so
        self._arrays: list[np.ndarray] = []  # the shared result rows: obs, reward, terminated, truncated, first
        self._actions = np.zeros(0)  # the shared action rows
        self._memory: mmap.mmap | None = None
        self._memory_fd = _anonymous_file()
        self._workers: list[_Worker] = []
        procs: list[subprocess.Popen] = []
        self._finalizer = weakref.finalize(self, _kill, procs, self._memory_fd)  # if close() is never called
        try:
            for w in range(count):
                self._workers.append(_Worker(w, list(range(w, num_envs, count)), self._memory_fd))
                procs.append(self._workers[-1].proc)
            self.spec: EnvSpec = self._start(factory, seed, max_episode_steps)
        except BaseException:
            self.close()
            raise

    def _start(self, factory: EnvFactory, seed: int, max_episode_steps: int) -> EnvSpec:
        for w in self._workers:
            w.conn.send(("init", sys.path, factory, w.ids, [seed + i for i in w.ids], max_episode_steps))
        deadline = time.monotonic() + START_TIMEOUT_S
        specs = [self._expect(w, "ready", deadline, f"starting (limit {START_TIMEOUT_S:g}s)") for w in self._workers]
        if any(s != specs[0] for s in specs):
            raise EnvWorkerError(f"env '{factory.env_id}': the workers' envs have different specs: {specs}")
        size = shared_size(specs[0], self.num_envs)
        os.ftruncate(self._memory_fd, size)
        self._memory = mmap.mmap(self._memory_fd, size)
        *self._arrays, self._actions = shared_arrays(self._memory, specs[0], self.num_envs)
        for w in self._workers:
            w.conn.send(("attach", size, self.num_envs))
        return specs[0]

    def reset(self) -> None:
        """Resets every env (after the steps in flight); the next recv batches carry first=True, ids in order."""
        self._check_open()
        deadline = time.monotonic() + START_TIMEOUT_S
        with self._cond:
            self._pump(lambda: [w for w in self._workers if w.pending], deadline, "reset")
            self._queue.clear()
            for w in self._workers:
                self._post(w, ("reset", w.ids), list(w.ids))
            self._queue.extend(range(self.num_envs))
            self._in_flight = set(range(self.num_envs))
            self._ready = [False] * self.num_envs
            self._cond.notify_all()

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Writes the actions (as `SerialVecEnv.send` takes them) to the envs' shared rows and posts each worker its
        env ids; returns at once.

        Raises:
            ValueError: if lengths differ, an env id is already waiting for its step, or an action's shape does not
                fit the spec.
        """
        self._check_open()
        id_list = np.asarray(env_ids).tolist()
        if len(actions) != len(id_list):
            raise ValueError(f"send: {len(actions)} actions for {len(id_list)} env ids")
        count = len(self._workers)
        with self._cond:
            claim(self._in_flight, id_list)  # first: a refused send must not write rows that are in flight
            try:
                self._actions[id_list] = actions
            except ValueError:
                self._in_flight.difference_update(id_list)
                raise
            mine: list[list[int]] = [[] for _ in range(count)]
            for i in id_list:
                mine[i % count].append(i)
            for w, ids in zip(self._workers, mine):
                if ids:
                    self._post(w, ("step", ids), ids)
            self._queue.extend(id_list)
            self._cond.notify_all()

    def recv(self, timeout: float = 60.0) -> StepBatch:
        """Returns the batch_size least recently sent envs, once their workers have stepped them.

        Raises:
            TimeoutError: fewer than batch_size envs sent, or a worker not done, within `timeout` seconds (nothing
                is lost: a later recv returns the same batch).
            EnvWorkerError, UserError: a worker failed (every worker is then closed).
        """
        self._check_open()
        deadline = time.monotonic() + timeout
        b = self.batch_size
        with self._cond:
            if len(self._queue) < b:
                await_sends(self._cond, self._queue, b, timeout)
            ids = list(itertools.islice(self._queue, b))  # only this thread takes from the queue
        count = len(self._workers)
        self._pump(lambda: [self._workers[w] for w in sorted({i % count for i in ids if not self._ready[i]})],
                   deadline, f"recv (timeout {timeout:g}s)")
        idx = np.array(ids, np.int32)
        obs, reward, terminated, truncated, first = (a.take(idx, axis=0) for a in self._arrays)
        with self._cond:  # copied out above: now the envs may be sent again
            for i in ids:
                self._queue.popleft()
                self._ready[i] = False
            self._in_flight.difference_update(ids)
        return StepBatch(idx, obs, reward, terminated, truncated, first, reward, terminated | truncated)

    def render(self, env_id: int) -> Any:
        """The frame of env `env_id`'s `render()` (through `GymnasiumEnv`, the gymnasium env's), from its worker."""
        self._check_open()
        w = self._workers[env_id % len(self._workers)]
        with self._cond:
            self._send_to(w, ("render", env_id))
        return self._expect(w, "frame", time.monotonic() + 60.0, "render")

    def close(self) -> None:
        """Asks every worker to close its envs and exit; kills those still running after CLOSE_TIMEOUT_S."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(("close",))
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for w in self._workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.conn.close()
        self._arrays, self._actions = [], np.zeros(0)
        if self._memory is not None:
            try:
                self._memory.close()
            except BufferError:  # a view still referenced somewhere: the mapping goes with it
                pass
        self._finalizer()  # closes the memory file; kills nothing left

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("the subprocess env was closed")

    def _post(self, w: _Worker, message: tuple[Any, ...], ids: list[int]) -> None:
        w.pending.append(ids)  # before the message: its reply may come at once
        self._send_to(w, message)

    def _send_to(self, w: _Worker, message: tuple[Any, ...]) -> None:
        try:
            w.conn.send(message)
        except OSError:  # the worker is gone; it may have said why first (then _expect raises that)
            try:
                self._expect(w, "error", time.monotonic() + 1.0, "send")
            except TimeoutError:
                pass
            raise self._fail(self._died(w)) from None

    def _pump(self, busy: Callable[[], list[_Worker]], deadline: float, what: str) -> None:
        """Takes the workers' replies, whichever comes first, until `busy()` (the workers still owing one) is empty.

        Raises:
            TimeoutError: `deadline` passed first.
            UserError, EnvWorkerError: a worker reported an error or died (every worker is then closed).
        """
        while workers := busy():
            by_conn = {w.conn: w for w in workers}
            answered = wait(list(by_conn), max(0.0, deadline - time.monotonic()))
            if not answered:
                raise TimeoutError(f"{what}: {workers[0].describe()} did not answer in time (a step that takes that "
                                   "long, or a hung env)")
            for conn in answered:
                self._expect(by_conn[conn], "done", deadline, what)  # type: ignore[index]

    def _expect(self, w: _Worker, kind: str, deadline: float, what: str) -> Any:
        """Reads worker `w`'s messages until one of `kind` and returns its payload. Each "done" on the way (the
        reply to w's oldest pending send) marks those envs ready.

        Raises:
            TimeoutError: nothing came before `deadline`.
            UserError, EnvWorkerError: the worker reported an error, died, or sent what was not due (it is closed).
        """
        while True:
            try:
                ready = w.conn.poll(max(0.0, deadline - time.monotonic()))
                message = w.conn.recv() if ready else None
            except (EOFError, OSError):
                raise self._fail(self._died(w)) from None
            if message is None:
                raise TimeoutError(f"{what}: {w.describe()} did not answer in time")
            if message[0] == "error":
                _, is_user, summary, tb = message
                err: BaseException = UserError(summary) if is_user else \
                    EnvWorkerError(f"{w.describe()} failed: {summary}")
                err.__cause__ = RemoteTraceback(tb)
                raise self._fail(err)
            if message[0] == "done" and w.pending:
                for i in w.pending.popleft():
                    self._ready[i] = True
            elif message[0] != "done" and message[0] != kind:
                raise self._fail(EnvWorkerError(f"{w.describe()} sent {message[0]!r} where {kind!r} was due"))
            if message[0] == kind:
                return message[1] if len(message) > 1 else None

    def _died(self, w: _Worker) -> EnvWorkerError:
        try:
            code = w.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        return EnvWorkerError(f"{w.describe()} exited with code {code} without reporting an error (killed, out of "
                              "memory, or a crash in native code; its output above may say which)")

    def _fail(self, err: BaseException) -> BaseException:
        """Records `err` (every later call raises it) and closes every worker; returns it for the caller to raise."""
        if self._error is None:
            self._error = err
        self.close()
        return err


def claim(in_flight: set[int], ids: list[int]) -> None:
    """Adds `ids` to the env ids in flight (sent, not yet returned by recv), as `EnvStepper.claim` does inline.

    Raises:
        ValueError: an id already in flight, or twice in `ids` (nothing is claimed then).
    """
    if not in_flight.isdisjoint(ids):
        raise ValueError(f"send: env id {min(in_flight.intersection(ids))} was sent again before recv returned it")
    size = len(in_flight)
    in_flight.update(ids)
    if len(in_flight) - size != len(ids):
        in_flight.difference_update(ids)
        raise ValueError(f"send: env ids {ids} name an env twice")


def _anonymous_file() -> int:
    """A file descriptor of an unnamed, empty file for shared memory (freed once closed and unmapped everywhere)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("jaxrl_dist_envs")
    with tempfile.TemporaryFile() as f:  # no memfd (macOS): an unlinked temporary file
        return os.dup(f.fileno())


def _kill(procs: list[subprocess.Popen], fd: int) -> None:
    """Last resort when a `SubprocVecEnv` is dropped without close(): kills its workers, closes its file."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    try:
        os.close(fd)
    except OSError:
        pass
