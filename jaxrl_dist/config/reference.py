"""The config reference page, generated from the schema's field docs so that it cannot drift from the code.

`python -m jaxrl_dist.config.reference` rewrites `docs/configuration.md`; `--check` exits 1 when the page is stale
(a test runs it). Every field of every section, the built-in algorithms' sections included, is one table row: key,
default, what is allowed (type, choices and limits, as the loader checks them) and the field's doc.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from jaxrl_dist.config.schema import Config

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

INTRO = """# Config reference

Every config key, its default and what it does. Back to the [README](../README.md) · [all pages](../README.md#documentation).

Generated from the schema (`jaxrl_dist/config/schema.py` and each algorithm's `config.py`) by
`python -m jaxrl_dist.config.reference`; do not edit by hand. A test fails when this page is stale.

A config is a YAML mapping (or a Python file defining a `config` dict) of the sections below. Keys left out take
their defaults; `$global` sets a key in every section that declares it; `--set KEY=VALUE` overrides one key. See
[Config format](usage.md#config-format) for the loading rules and [Derived sizes](usage.md#derived-sizes-the-plan) for
the rules between keys.
"""


def _type(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(typ))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        text = ", ".join(_type(a) for a in args[:-1]) + (" or " if len(args) > 1 else "") + _type(args[-1])
        return text + (" or null" if type(None) in typing.get_args(typ) else "")
    if origin is tuple:
        return f"list of {_type(typing.get_args(typ)[0])}"
    return {int: "int", float: "float", bool: "bool", str: "str", dict: "mapping", list: "list"}.get(typ, str(typ))


def _allowed(typ: Any, meta: Any) -> str:
    limits = [f"{sym} {meta[key]:g}" for key, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
              if key in meta]
    return _type(typ) + (", " + ", ".join(limits) if limits else "")


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc,operator]


def _rows(cls: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key, typ = prefix + f.name, hints[f.name]
        if f.name == "algo" and cls is Config:
            continue  # one section per algorithm, below
        if dataclasses.is_dataclass(typ):
            rows.append(f"| **`{key}`** | | | {_cell(f.metadata.get('doc', ''))} |")
            rows += _rows(typ, key + ".")  # type: ignore[arg-type]
            continue
        rows.append(f"| `{key}` | `{_value(_default(f))}` | {_allowed(typ, f.metadata)} | "
                    f"{_cell(f.metadata.get('doc', ''))} |")
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole page."""
    from jaxrl_dist.algos import REGISTRY

    lines = [INTRO, "| key | default | allowed | meaning |", "|---|---|---|---|"]
    lines += _rows(Config, "")
    for name, definition in sorted(REGISTRY.items()):
        doc = _cell(definition.config.__doc__ or "")
        lines.append(f"| **`algo`** (`name: {name}`) | | | {doc} Data path: {definition.data}; actions: "
                     f"{', '.join(definition.action_kinds)}. |")
        lines += _rows(definition.config, "algo.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxrl_dist.config.reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python -m jaxrl_dist.config.reference", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
