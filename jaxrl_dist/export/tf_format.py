"""TensorFlow SavedModel export through `jax.experimental.jax2tf` (TensorFlow CPU is the `tf` extra).

The graph holds the policy as serialized StableHLO (jax2tf native serialization), lowered for both CPU and CUDA so
that a model exported on a laptop also serves on a GPU box. Loading it needs TensorFlow only, not JAX.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.export.signature import INPUT_NAME, Signature

EXTRA_HINT = "pip install 'jaxrl_dist[tf]'"
DIR_NAME = "savedmodel"
SIGNATURE_KEY = "serving_default"
PLATFORMS = ("cpu", "cuda")


def _import_tf() -> Any:
    # TensorFlow's C++ start-up chatter (the policy runs as one XLA call, so oneDNN does not matter to it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    return tf


def require() -> None:
    """Imports TensorFlow, or raises ImportError with the install command."""
    try:
        _import_tf()
    except ImportError:
        raise ImportError(f"SavedModel export needs TensorFlow, which is not installed: {EXTRA_HINT}") from None


def write(fn: Callable[[jax.Array], tuple[jax.Array, ...]], sig: Signature, meta_json: str, path: Path) -> None:
    """Saves `fn` (raw observations -> outputs in `sig` order) as a SavedModel directory at `path`.

    The `serving_default` signature takes `obs` `[batch, ...]` and returns a dict keyed by output name. The JSON
    metadata is stored as the string variable `metadata` and as the file `assets.extra/policy.json`.
    """
    tf = _import_tf()
    from jax.experimental import jax2tf

    names = sig.output_names
    info = sig.inputs[0]
    converted = jax2tf.convert(
        lambda obs: dict(zip(names, fn(obs))),
        polymorphic_shapes=["(b, ...)"],
        with_gradient=False,
        native_serialization_platforms=PLATFORMS,
    )
    module = tf.Module()
    module.policy = tf.function(
        converted,
        autograph=False,
        input_signature=[tf.TensorSpec((None, *info.shape), tf.as_dtype(np.dtype(info.dtype)), name=INPUT_NAME)],
    )
    module.metadata = tf.Variable(meta_json, trainable=False, name="metadata")
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_KEY: module.policy})
    (path / "assets.extra").mkdir(exist_ok=True)
    (path / "assets.extra" / "policy.json").write_text(meta_json)


def load(path: Path) -> Callable[[np.ndarray], dict[str, Any]]:
    """The SavedModel's serving signature, as `obs -> {output name: numpy array}`."""
    tf = _import_tf()
    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE_KEY]

    def run(obs: np.ndarray) -> dict[str, Any]:
        return {k: v.numpy() for k, v in serve(**{INPUT_NAME: tf.constant(obs)}).items()}

    return run
