"""Export of trained policies to ONNX and TensorFlow SavedModel, rebuilt from a checkpoint alone.

`export_policy` writes each format to a temporary name, runs it in its own runtime (onnxruntime, TensorFlow) on
random observations against the JAX policy, and only then moves it into place: a failed or interrupted export never
replaces a good file. Layout of the output folder (default `<experiment>/export/<step>/`)::

    policy.json     # metadata: algorithm, env id, checkpoint step, input/output names, shapes, dtypes, spaces
    policy.onnx     # --format onnx (the same metadata in metadata_props["jaxrl_dist"])
    savedmodel/     # --format savedmodel (signature "serving_default"; metadata in assets.extra/policy.json)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_dist.errors import UserError
from jaxrl_dist.export import onnx_format, tf_format
from jaxrl_dist.export.signature import Signature, metadata, random_observations, signature_of, to_json
from jaxrl_dist.io.policy import LoadedPolicy, load_policy

FORMATS = {"onnx": onnx_format, "savedmodel": tf_format}
FORMAT_CHOICES = (*FORMATS, "all")
_TARGETS = {"onnx": onnx_format.FILE_NAME, "savedmodel": tf_format.DIR_NAME}
EXPORT_DIR = "export"
ATOL, RTOL = 1e-5, 1e-5


class ParityError(UserError):
    """The exported model does not compute what the JAX policy computes (nothing was moved into place)."""


@dataclasses.dataclass(frozen=True)
class Exported:
    """One written export and its parity figures against the JAX policy."""

    format: str
    path: Path
    samples: int  # random observations compared; 0 when not verified
    max_abs_diff: float  # over the float outputs
    action_mismatches: int  # integer outputs (greedy actions) that differ


def parse_formats(value: str) -> list[str]:
    """`onnx`, `savedmodel`, `all`, or a comma-separated list -> the formats, in a fixed order.

    Raises:
        UserError: A name that is not a format.
    """
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in FORMAT_CHOICES]
    if bad or not names:
        raise UserError(f"export format {value!r} is not allowed: use one of {', '.join(FORMAT_CHOICES)}")
    return list(FORMATS) if "all" in names else [f for f in FORMATS if f in names]


def require(formats: list[str]) -> None:
    """Fails early (before anything is trained or written) when a format's runtime is not installed.

    Raises:
        UserError: The message names the format's missing package and the install command.
    """
    for fmt in formats:
        try:
            FORMATS[fmt].require()
        except ImportError as err:
            raise UserError(str(err)) from None


def default_out(policy: LoadedPolicy) -> Path:
    """`<experiment>/export/<step>/`, or `export/best-<step>/` for the best checkpoint."""
    return policy.experiment / EXPORT_DIR / (policy.name or str(policy.step))


def _flat_policy(policy: LoadedPolicy, sig: Signature) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """Raw observations -> the inference outputs as a tuple in signature order, parameters closed over."""
    names, params, inference = sig.output_names, policy.params, policy.algo.inference

    def fn(obs: jax.Array) -> tuple[jax.Array, ...]:
        out = inference(params, obs)
        return tuple(out[n] for n in names)

    return fn


def compare(reference: dict[str, np.ndarray], got: dict[str, Any], sig: Signature) -> tuple[float, int]:
    """Max abs difference over float outputs and the number of differing integer entries.

    Raises:
        ParityError: An output is missing or has another shape.
    """
    max_diff, mismatches = 0.0, 0
    for info in sig.outputs:
        want = reference[info.name]
        have = np.asarray(got.get(info.name))
        if have.shape != want.shape:
            raise ParityError(f"exported output {info.name!r} has shape {have.shape}, the JAX policy's {want.shape}")
        if np.issubdtype(want.dtype, np.floating):
            max_diff = max(max_diff, float(np.max(np.abs(have.astype(np.float64) - want), initial=0.0)))
        else:
            mismatches += int(np.sum(have != want))
    return max_diff, mismatches


def _verify(fmt: str, path: Path, fn: Callable, sig: Signature, samples: int) -> tuple[float, int]:
    obs = random_observations(sig, samples)
    reference = dict(zip(sig.output_names, (np.asarray(x) for x in jax.jit(fn)(obs))))
    max_diff, mismatches = compare(reference, FORMATS[fmt].load(path)(obs), sig)
    floats = [reference[i.name] for i in sig.outputs if np.issubdtype(reference[i.name].dtype, np.floating)]
    scale = max((float(np.max(np.abs(f), initial=0.0)) for f in floats), default=0.0)
    if max_diff > ATOL + RTOL * scale or mismatches:
        raise ParityError(
            f"{fmt} export of {path.name} differs from the JAX policy on {samples} random observations: max abs "
            f"diff {max_diff:.3g} (allowed {ATOL + RTOL * scale:.3g}), {mismatches} differing actions; not written"
        )
    return max_diff, mismatches


def _move_into_place(tmp: Path, target: Path) -> None:
    """Replaces `target` with `tmp`; the old target is removed only once the new one is in place."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def export_policy(
    policy: LoadedPolicy,
    formats: list[str],
    out: Path | None = None,
    *,
    samples: int = 1000,
    log: Callable[[str], None] = print,
) -> list[Exported]:
    """Exports `policy` in each format to `out` (default `<experiment>/export/<step>/`), verified unless
    `samples` is 0.

    Raises:
        UserError: A format's runtime is missing, `out` is not a directory, or a parity check failed (`ParityError`);
            in each case no existing export file is replaced.
    """
    require(formats)
    out = (out or default_out(policy)).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"export folder {out} exists and is not a directory")
    sig = signature_of(policy)
    fn = _flat_policy(policy, sig)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for fmt in formats:
        start = time.monotonic()
        target = out / _TARGETS[fmt]
        tmp = out / f".{target.name}.tmp-{os.getpid()}"
        try:
            FORMATS[fmt].write(fn, sig, to_json(metadata(policy, sig, fmt)), tmp)
            diff, mismatches = _verify(fmt, tmp, fn, sig, samples) if samples > 0 else (float("nan"), 0)
            _move_into_place(tmp, target)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
        check = (f"parity on {samples} random observations: max abs diff {diff:.2g}, actions identical"
                 if samples > 0 else "not verified")
        log(f"{fmt}: wrote {target} in {time.monotonic() - start:.1f} s; {check}")
        results.append(Exported(fmt, target, samples, diff, mismatches))
    meta_path = out / "policy.json"
    tmp_meta = out / ".policy.json.tmp"
    tmp_meta.write_text(to_json(metadata(policy, sig, ",".join(formats))))  # what this export wrote
    os.replace(tmp_meta, meta_path)
    return results


__all__ = ["FORMATS", "Exported", "ParityError", "default_out", "export_policy", "load_policy", "parse_formats",
           "require"]
