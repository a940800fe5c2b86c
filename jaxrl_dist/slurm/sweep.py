"""Seeds x sweep values -> the combinations of a job array (pure functions, no Slurm, no files).

`--seeds 0-2 --sweep algo.lr=1e-3,3e-4` gives six combinations, one per array task, in a fixed order: the sweep
values vary slowest (in the order given), the seed fastest, so the tasks of one sweep value are neighbours.
Each combination has a name that is its directory under the experiment (`lr=0.001_seed0`) and the `train`
arguments that make it (`--set algo.lr=1e-3 --seed 0`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence

from jaxrl_dist.errors import UserError


class SweepError(UserError):
    """A `--seeds` or `--sweep` value that cannot be expanded (names the flag, the value and the expected form)."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One `--sweep KEY=V1,V2,...`: a config key and its values as written (YAML text, parsed by `--set`)."""

    key: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Combination:
    """One array task: `name` is its directory under the experiment; `values` maps sweep keys to their value."""

    index: int
    name: str
    seed: int
    values: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        """The `--set KEY=VALUE` strings of this combination (without the seed)."""
        return [f"{key}={value}" for key, value in self.values]

    @property
    def sweep_label(self) -> str:
        """The combination without its seed: the runs that share it are averaged by the report."""
        return ",".join(f"{key}={value}" for key, value in self.values) or "(no sweep)"


_SEEDS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+\-]+")  # what may not appear in a directory name (see io.experiment)


def parse_seeds(text: str) -> list[int]:
    """`"0-4"` -> [0..4], `"1,5,7"` -> [1, 5, 7], ranges and lists mixed (`"0-2,10"`); duplicates are an error.

    Raises:
        SweepError: Not of that form, an empty or descending range, or a seed given twice.
    """
    seeds: list[int] = []
    for part in text.split(","):
        m = _SEEDS.match(part)
        if not m:
            raise SweepError(f"--seeds '{text}': '{part}' is not a seed or range; expected e.g. 0-4 or 0,1,7")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise SweepError(f"--seeds '{text}': range {lo}-{hi} is empty; write the smaller seed first")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SweepError(f"--seeds '{text}': seed {repeated[0]} is given twice; each seed must appear once")
    return seeds


def split_values(text: str) -> list[str]:
    """Splits `V1,V2,...` at the commas outside brackets and braces, so YAML lists stay whole (`[32,32],[64]`)."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_sweep(text: str) -> Sweep:
    """`"algo.lr=1e-3,3e-4"` -> `Sweep("algo.lr", ("1e-3", "3e-4"))`.

    Raises:
        SweepError: No `=`, a malformed key, an empty value, or a value given twice.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise SweepError(f"--sweep '{text}': expected KEY=V1,V2,... with a dotted config key, e.g. algo.lr=1e-3,3e-4")
    values = split_values(raw)
    if any(not v for v in values):
        raise SweepError(f"--sweep '{text}': empty value; separate the values of {key} with single commas")
    if len(set(values)) != len(values):
        raise SweepError(f"--sweep '{text}': a value of {key} is given twice; each value must appear once")
    return Sweep(key, tuple(values))


def check_sweeps(sweeps: Sequence[Sweep], sets: Sequence[str]) -> None:
    """A key may be swept once and must not also be fixed with `--set` (which value would win is not obvious).

    Raises:
        SweepError: A key swept twice, or swept and set.
    """
    keys = [s.key for s in sweeps]
    for key in keys:
        if keys.count(key) > 1:
            raise SweepError(f"--sweep {key} is given twice; give all of its values in one --sweep {key}=V1,V2")
    fixed = {s.partition("=")[0].strip() for s in sets}
    both = sorted(set(keys) & fixed)
    if both:
        raise SweepError(f"--sweep {both[0]} is also fixed with --set {both[0]}=...; drop one of them")
    if "train.seed" in keys:
        raise SweepError("--sweep train.seed: use --seeds (e.g. --seeds 0-4) to run several seeds")


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key (`algo.lr` -> `lr`), or the whole key where two last parts clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def safe_value(value: str) -> str:
    """A value as it may appear in a directory name: runs of other characters become one `-`."""
    sign = "-" if value.startswith("-") else ""  # keep a negative number's sign: lr=-1 is not lr=1
    return sign + (_UNSAFE.sub("-", value).strip("-") or "x")


def expand(seeds: Sequence[int], sweeps: Sequence[Sweep]) -> list[Combination]:
    """Every (sweep values..., seed) combination, sweep values slowest, seed fastest, indexed from 0.

    Raises:
        SweepError: Two combinations would get the same directory name (values that differ only in characters a
            directory name cannot hold, e.g. `[32,32]` and `(32,32)`).
    """
    short = _short_keys([s.key for s in sweeps])
    combos: list[Combination] = []
    grids = itertools.product(*(s.values for s in sweeps))
    for values, seed in itertools.product(list(grids), seeds):
        pairs = tuple(zip((s.key for s in sweeps), values))
        name = "_".join([*(f"{short[k]}={safe_value(v)}" for k, v in pairs), f"seed{seed}"])
        combos.append(Combination(len(combos), name, seed, pairs))
    names = [c.name for c in combos]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise SweepError(f"--sweep values give two runs the same directory name '{clash}'; "
                         f"use values that differ in letters, digits or . _ = + -")
    return combos
