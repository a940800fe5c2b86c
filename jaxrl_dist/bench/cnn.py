"""`bench cnn`: forward+backward time, GFLOP/s and compile time of the Nature-CNN torso on this machine's JAX backend.

A DQN-like loss on uint8 `[B, 4, 84, 84]` frames (the torso, a 6-action linear Q head, the squared error of the
taken action's value), its gradient with respect to all parameters, jitted, timed to `block_until_ready` after one
warm-up call. GFLOP/s counts the multiply-adds of the convolutions and dense layers, twice each for the backward
pass but for the first convolution's input gradient, which is never computed. `--compare` also times the same
function computed by flax `nn.Conv` layers on NHWC frames (`NatureCNN(matmul_convs=False)`, the formulation before
issue 16 and the one on GPUs), interleaved with the torso's calls so that both see the same machine load. `cpu ms`
is the process's CPU time per call (all its threads), steadier than wall time on a machine that others share.
`--scan K` times K SGD steps fused in one `lax.scan`, as the learner runs its updates: XLA:CPU compiles `nn.Conv`
gradients inside a scan into naive loops (issue 16), which a standalone gradient does not show.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (features, kernel, stride) of the Nature CNN
NUM_ACTIONS = 6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, nargs="+", default=[32, 256], help="batch sizes timed")
    p.add_argument("--reps", type=int, default=7, help="timed calls per batch size (the median is reported)")
    p.add_argument("--hidden", type=int, default=512, help="the torso's dense layer size")
    p.add_argument("--compare", action="store_true", help="also time the flax nn.Conv (NHWC) formulation")
    p.add_argument("--scan", type=int, default=0, metavar="K",
                   help="time K SGD steps fused in one lax.scan, as the learner runs them (ms are per step)")


def flops(batch: int, frame: tuple[int, int, int] = (4, 84, 84), hidden: int = 512) -> int:
    """Floating-point operations of one forward+backward pass (2 per multiply-add) of the torso and the Q head."""
    channels, size, _ = frame
    fwd = dgrad = 0
    for i, (features, kernel, stride) in enumerate(CONVS):
        size = (size - kernel) // stride + 1
        macs = size * size * features * kernel * kernel * channels
        fwd, dgrad, channels = fwd + macs, dgrad + (macs if i else 0), features
    dense = size * size * channels * hidden + hidden * NUM_ACTIONS
    return 2 * batch * (2 * (fwd + dense) + dgrad + dense)  # forward, weight gradients, input gradients


def _step_fn(torso: Any, scan: int) -> tuple[Callable[..., Any], Any]:
    """`(init, jitted step)` of the torso under a linear Q head: the loss gradient `(params, obs [B, ...], action,
    target) -> grads`, or with `scan` > 0 that many SGD steps in a `lax.scan` over `obs [scan, B, ...]` (the
    learner's fused updates), returning the final parameters."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class QNet(nn.Module):
        torso: nn.Module

        @nn.compact
        def __call__(self, obs: Any) -> Any:
            return nn.Dense(NUM_ACTIONS)(self.torso(obs))

    net = QNet(torso)

    def loss(params: Any, obs: Any, action: Any, target: Any) -> Any:
        values: Any = net.apply(params, obs)
        q = jnp.take_along_axis(values, action[:, None], axis=1)[:, 0]
        return jnp.mean(jnp.square(q - target))

    def steps(params: Any, obs: Any, action: Any, target: Any) -> Any:
        def sgd(p: Any, o: Any) -> tuple[Any, None]:
            return jax.tree.map(lambda w, g: w - 1e-4 * g, p, jax.grad(loss)(p, o, action, target)), None

        return jax.lax.scan(sgd, params, obs)[0]

    return net.init, jax.jit(steps if scan else jax.grad(loss))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from jaxrl_dist.networks import NatureCNN

    torsos = {"nature_cnn": NatureCNN((args.hidden,))}
    if args.compare:
        torsos["nn.Conv NHWC"] = NatureCNN((args.hidden,), matmul_convs=False)
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batch:
        frames = (args.scan, batch) if args.scan else (batch,)
        obs = jax.device_put(rng.integers(0, 256, (*frames, 4, 84, 84), dtype=np.uint8))
        action = jax.device_put(rng.integers(0, NUM_ACTIONS, batch, dtype=np.int32))
        target = jax.device_put(rng.normal(size=batch).astype(np.float32))
        calls: dict[str, tuple[Any, Any]] = {}
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        compile_s: dict[str, float] = {}
        for name, torso in torsos.items():
            init, step = _step_fn(torso, args.scan)
            params = init(jax.random.PRNGKey(0), obs.reshape(-1, 4, 84, 84)[:1])
            start = time.perf_counter()
            compiled = step.lower(params, obs, action, target).compile()
            compile_s[name] = time.perf_counter() - start
            jax.block_until_ready(compiled(params, obs, action, target))  # warm-up
            calls[name], times[name], cpu[name] = (compiled, params), [], []
        for _ in range(args.reps):  # interleaved, so that a busy moment costs every formulation alike
            for name, (compiled, params) in calls.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                jax.block_until_ready(compiled(params, obs, action, target))
                times[name].append((time.perf_counter() - start) / max(1, args.scan))
                cpu[name].append((time.process_time() - start_cpu) / max(1, args.scan))
        for name, ts in times.items():
            median = statistics.median(ts)
            rows.append({"torso": name, "batch": batch, "ms": round(median * 1e3, 2),
                         "min_ms": round(min(ts) * 1e3, 2), "max_ms": round(max(ts) * 1e3, 2),
                         "gflops": round(flops(batch, hidden=args.hidden) / median / 1e9, 1),
                         "cpu_ms": round(statistics.median(cpu[name]) * 1e3, 2),
                         "compile_s": round(compile_s[name], 2)})
    return {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "reps": args.reps, "scan": args.scan,
            "rows": rows}


def render(r: dict[str, Any]) -> str:
    lines = [(f"bench cnn  fwd+bwd of a Q-loss on uint8 [B, 4, 84, 84]  {r['backend']} ({r['device']})  "
              f"median of {r['reps']}" + (f", per step of a lax.scan of {r['scan']}" if r["scan"] else "")),
             f"{'torso':<15}{'batch':>6}{'ms':>10}{'min..max ms':>18}{'GFLOP/s':>9}{'cpu ms':>10}{'compile s':>11}"]
    for row in r["rows"]:
        spread = f"{row['min_ms']:.1f}..{row['max_ms']:.1f}"
        lines.append(f"{row['torso']:<15}{row['batch']:>6}{row['ms']:>10.1f}{spread:>18}{row['gflops']:>9}"
                     f"{row['cpu_ms']:>10.1f}{row['compile_s']:>11}")
    return "\n".join(lines)
