"""Run by tests/test_accelerator.py in a process of its own (fake CPU devices, asynchronous dispatch on): the actor's
policy-call time in a run whose learner stays off, then in one where a slow learner (a large MLP, K = 32) trains on
another device, and the time of one learner call. Prints one JSON line. Argument: a folder for the runs' outputs.

While the learner is off, a thread keeps the learner's device as busy as the learner would (a chain of large matrix
products, each ~0.2 s, on one core): on a 2-core machine the learner's computation takes a core away from the
actor's threads, which slows its policy calls whether or not they wait for anything. The comparison then shows
only what the actor waits for."""

import json
import statistics
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from jaxrl_dist.config import build
from jaxrl_dist.roles.graph import build_graph
from jaxrl_dist.roles.runner import run_graph


def config(total: int, learning_starts: int, root: Path) -> object:
    return build({"env": {"num_envs": 8}, "network": {"hidden": [512, 512]},
                  "replay": {"batch_size": 256, "capacity": 20000},
                  "roles": {"cpu_async_dispatch": True, "actor": {"devices": ["cpu:0"]},
                            "learner": {"devices": ["cpu:1"], "updates_per_call": 32}},
                  "train": {"learning_starts": learning_starts, "total_env_steps": total, "replay_ratio": 0.25},
                  "eval": {"interval": 0}, "checkpoint": {"interval": 0},
                  "log": {"tensorboard": False, "interval_s": 0.5, "root": str(root)}})


def policy_calls(graph: object, folder: Path, min_updates: int) -> tuple[list[float], object]:
    """The run's mean policy-call times (ms), one per metrics line (half a second of calls) once the learner made
    `min_updates`."""
    folder.mkdir(parents=True)
    result = run_graph(graph, folder, time.time())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["time/actor/inference_ms"] for r in rows
            if r.get("updates", 0) >= min_updates and "time/actor/inference_ms" in r], result


def burn(stop: threading.Event) -> None:
    """Computes on the learner's device (cpu:1) until `stop`, one ~0.2 s product at a time."""
    x = jax.device_put(np.full((1024, 1024), 1e-3, np.float32), jax.devices()[1])
    product = jax.jit(lambda a: jax.numpy.tanh(a @ a))
    while not stop.is_set():
        x = jax.block_until_ready(product(x))


def main(out: Path) -> None:
    stop = threading.Event()
    burner = threading.Thread(target=burn, args=(stop,), daemon=True)
    burner.start()
    alone, _ = policy_calls(build_graph(config(20_000, 19_999, out)), out / "alone", 0)  # learning starts at the end
    stop.set()
    burner.join()
    g = build_graph(config(6_000, 1_000, out))
    busy, result = policy_calls(g, out / "busy", 64)
    state = g.learner.read_snapshot().state
    batches = g.path.warmup_batches()
    jax.block_until_ready(g.learner._update(jax.tree.map(lambda x: x.copy(), state), batches))
    start = time.perf_counter()
    jax.block_until_ready(g.learner._update(state, batches))
    call_ms = 1000 * (time.perf_counter() - start)
    print(json.dumps({"alone_ms": statistics.median(alone[1:]), "alone": alone, "busy_ms": busy,
                      "learner_call_ms": call_ms, "updates": result.updates}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
