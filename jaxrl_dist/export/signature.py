"""What an exported policy takes and returns, and the metadata stored with it.

The signature is read off the algorithm's `inference` function with `jax.eval_shape`, so every algorithm exports the
outputs it declares (DQN: `action`, `q_values`) without export code of its own. The batch dimension is dynamic and
named `batch`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from typing import Any

import jax
import numpy as np

from jaxrl_dist.config import to_dict
from jaxrl_dist.io.policy import LoadedPolicy

INPUT_NAME = "obs"
BATCH_DIM = "batch"
METADATA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output: its name, its shape after the batch dimension, and its numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": [BATCH_DIM, *self.shape], "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class Signature:
    """The exported graph's one input (`obs`, raw env observations) and its named outputs, in order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]


def signature_of(policy: LoadedPolicy) -> Signature:
    """Traces `policy.algo.inference` abstractly (batch 1) to learn its outputs' names, shapes and dtypes."""
    spec = policy.spec
    obs = jax.ShapeDtypeStruct((1, *spec.obs_shape), np.dtype(spec.obs_dtype))
    outs = jax.eval_shape(policy.algo.inference, policy.params, obs)
    if not isinstance(outs, dict) or "action" not in outs:
        raise TypeError(f"algorithm {policy.cfg.algo.name!r}: inference must return a dict with an 'action' entry")
    outputs = tuple(TensorInfo(name, tuple(v.shape[1:]), np.dtype(v.dtype).name) for name, v in outs.items())
    return Signature((TensorInfo(INPUT_NAME, spec.obs_shape, spec.obs_dtype),), outputs)


def metadata(policy: LoadedPolicy, sig: Signature, fmt: str) -> dict[str, Any]:
    """The JSON description stored inside each exported model and beside it as `policy.json`."""
    spec = policy.spec
    if spec.action_kind == "discrete":
        action_space: dict[str, Any] = {"kind": "discrete", "n": spec.num_actions}
    elif spec.action_kind == "multi_discrete":
        action_space = {"kind": "multi_discrete", "nvec": [int(n) for n in spec.nvec]}
    else:
        action_space = {"kind": "continuous", "shape": [int(x) for x in spec.action_shape],
                        "low": [float(x) for x in spec.action_low],
                        "high": [float(x) for x in spec.action_high]}
    try:
        version = importlib.metadata.version("jaxrl_dist")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "metadata_version": METADATA_VERSION,
        "format": fmt,
        "producer": f"jaxrl_dist {version}",
        "algo": policy.cfg.algo.name,
        "env_id": policy.cfg.env.id,
        "checkpoint_step": policy.step,
        "experiment": str(policy.experiment),
        "inputs": [t.describe() for t in sig.inputs],
        "outputs": [t.describe() for t in sig.outputs],
        "action_space": action_space,
        "network": to_dict(policy.cfg)["network"],
    }


def to_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=False)


def random_observations(sig: Signature, n: int, seed: int = 0) -> np.ndarray:
    """`n` random observations for parity checks: uniform bytes for uint8 frames, standard normal otherwise
    (wider than most envs' ranges, so that every ReLU is exercised in both directions)."""
    rng = np.random.default_rng(seed)
    info = sig.inputs[0]
    dtype = np.dtype(info.dtype)
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return rng.integers(limits.min, int(limits.max) + 1, size=(n, *info.shape), dtype=dtype)
    return rng.standard_normal((n, *info.shape)).astype(dtype)
