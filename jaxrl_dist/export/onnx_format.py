"""ONNX export through jax2onnx (the jax2tf -> tf2onnx route fails on current JAX), checked with onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.export.signature import BATCH_DIM, INPUT_NAME, Signature

EXTRA_HINT = "pip install 'jaxrl_dist[onnx]'"
FILE_NAME = "policy.onnx"


def require() -> None:
    """Imports what ONNX export needs, or raises ImportError with the install command."""
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(f"ONNX export needs jax2onnx, onnx and onnxruntime ({err.name} is missing): "
                          f"{EXTRA_HINT}") from None


def write(fn: Callable[[jax.Array], tuple[jax.Array, ...]], sig: Signature, meta_json: str, path: Path) -> None:
    """Converts `fn` (raw observations -> outputs in `sig` order, parameters closed over) to `path`.

    The batch dimension is symbolic, so the model accepts any batch size. `meta_json` goes into the model's
    `metadata_props` under the key `jaxrl_dist`.
    """
    import onnx
    from jax2onnx import to_onnx

    # jax2onnx's IR logs a warning per shape-only helper value it does not serialize; they carry no information.
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    batch = jax.export.symbolic_shape(BATCH_DIM)[0]
    info = sig.inputs[0]
    model = to_onnx(
        fn,
        [jax.ShapeDtypeStruct((batch, *info.shape), np.dtype(info.dtype))],
        model_name="jaxrl_dist_policy",
        input_names=[INPUT_NAME],
        output_names=sig.output_names,
    )
    entry = model.metadata_props.add()
    entry.key, entry.value = "jaxrl_dist", meta_json
    model.doc_string = "jaxrl_dist policy; see the 'jaxrl_dist' metadata entry for inputs, outputs and spaces"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def load(path: Path) -> Callable[[np.ndarray], dict[str, Any]]:
    """An onnxruntime session for `path`, as `obs -> {output name: array}`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(obs: np.ndarray) -> dict[str, Any]:
        return dict(zip(names, session.run(names, {INPUT_NAME: obs})))

    return run
