"""One subprocess env worker: `python -m jaxrl_dist.envs.worker SOCKET_FD MEMORY_FD`, started by `subproc`.

Messages from the parent, in order: ("init", sys.path, EnvFactory, env ids, seeds, max_episode_steps), answered with
("ready", EnvSpec); ("attach", bytes, num_envs) maps the shared block; then any of ("step", env ids) (the actions
are in their shared rows) and ("reset", env ids), each answered with ("done",) once the envs' result rows are
written; ("render", env id), answered with ("frame", array); ("close",). Any exception is answered with ("error",
is_user_error, one line, traceback), and the worker exits; so does it when the parent closes its socket or dies.
Signals that stop a run are ignored: the parent decides when the workers end.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from jaxrl_dist.envs.serial import EnvStepper
from jaxrl_dist.errors import UserError
from jaxrl_dist.plugins import describe_error


def main(argv: list[str]) -> int:
    # Ctrl-C, preemption (SIGTERM) and Slurm's warning (SIGUSR1) may reach every process of the job: the parent
    # stops the run and saves its checkpoint first, then closes the workers (roles/signals.py). A worker killed by
    # them would end that run with an error instead.
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)
    conn, memory_fd = Connection(int(argv[0])), int(argv[1])
    _exit_with_parent()
    stepper: EnvStepper | None = None
    try:
        _, path, factory, ids, seeds, max_episode_steps = conn.recv()
        sys.path[:] = path  # the parent's, so that the env's module imports as it does there
        stepper = EnvStepper(factory.build(len(ids)), seeds, max_episode_steps, factory.env_id)
        conn.send(("ready", stepper.spec))
        _serve(conn, stepper, ids, memory_fd)
    except EOFError:  # the parent closed its end: nothing to report
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure goes to the parent, which raises it
        try:
            conn.send(("error", isinstance(e, UserError), str(e) if isinstance(e, UserError) else describe_error(e),
                       traceback.format_exc()))
        except OSError:
            pass
        return 1
    finally:
        if stepper is not None:
            try:
                stepper.close()
            except Exception:  # noqa: BLE001, S110 - closing after the fact; the first error is what matters
                pass
    return 0


def _serve(conn: Connection, stepper: EnvStepper, ids: list[int], memory_fd: int) -> None:
    local = {i: k for k, i in enumerate(ids)}  # env id -> index among this worker's envs
    arrays: list[Any] = []  # the shared result rows
    shared_actions = np.zeros(0)
    scratch = np.zeros(0, np.int32)
    memory: mmap.mmap | None = None
    done = ("done",)
    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "step":
            env_ids = message[1]
            for flags in arrays[1:]:  # run() writes only what differs from zero
                flags[env_ids] = 0
            actions = stepper.actions(shared_actions[env_ids])
            stepper.run(zip([local[i] for i in env_ids], actions), env_ids, scratch, *arrays)
            conn.send(done)
        elif kind == "reset":
            env_ids = message[1]
            for flags in arrays[1:]:
                flags[env_ids] = 0
            stepper.restart(local[i] for i in env_ids)
            stepper.run(((local[i], None) for i in env_ids), env_ids, scratch, *arrays)
            conn.send(done)
        elif kind == "attach":
            from jaxrl_dist.envs.subproc import shared_arrays

            memory = mmap.mmap(memory_fd, message[1])
            *arrays, shared_actions = shared_arrays(memory, stepper.spec, message[2])
            scratch = np.zeros(message[2], np.int32)  # where run() writes its own env numbers: the parent knows
        elif kind == "render":
            env: Any = stepper.envs[local[message[1]]]
            conn.send(("frame", getattr(env, "_env", env).render()))  # a GymnasiumEnv's, or the env's own
        elif kind == "close":
            return
        else:
            raise RuntimeError(f"unknown message {kind!r} from the parent")


def _exit_with_parent() -> None:
    """Exits this process once its parent is gone, even while an env step hangs (the socket would tell only
    between steps)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
