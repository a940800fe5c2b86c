"""Loading configs: YAML or Python files, the `$global` namespace, `--set` overrides, typed conversion.

Every mistake becomes one `ConfigError` line naming the file, the key, the value and what is allowed; nothing is
created before the whole config has been checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import runpy
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from jaxrl_dist.config.schema import Config
from jaxrl_dist.errors import ConfigError, UserError

GLOBAL_KEY = "$global"
# Keys of earlier versions, with what replaced them (an error names the new key instead of "unknown").
RENAMED = {
    "roles.actor.device": "roles.actor.devices (auto, a count, a name such as cpu:0, or a list of names)",
    "roles.learner.device": "roles.learner.devices (auto, a count, a name such as gpu:1, or a list of names)",
    "roles.learner.num_devices": "roles.learner.devices (a count N, or a list of N device names)",
}


SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # the shipped configs, inside the package


def shipped_configs() -> list[str]:
    """The names of the shipped configs (`jaxrl_dist/configs/<name>.yaml`), which `--config NAME` finds anywhere."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def config_path(path: str | Path) -> Path:
    """The file `--config` names: `path` itself when it is a file, else the shipped config of that name
    (`dqn_cartpole` or `dqn_cartpole.yaml`: `jaxrl_dist/configs/dqn_cartpole.yaml`, after a plain `pip install` too).

    Raises:
        ConfigError: Neither exists; the message lists the shipped configs.
    """
    given = Path(path)
    if given.is_file():
        return given
    if given.parent == Path(".") and given.suffix in ("", ".yaml"):
        shipped = SHIPPED / f"{given.stem}.yaml"
        if shipped.is_file():
            return shipped
    raise ConfigError(f"config file '{path}' not found, and it names no shipped config; shipped: "
                      f"{', '.join(shipped_configs())}")


def read_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML file, or a Python file that defines a `config` dict, into a plain dict; `path` may name a
    shipped config (see `config_path`)."""
    path = config_path(path)
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file '{path}' cannot be read: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config file '{path}'{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    elif path.suffix == ".py":
        try:
            namespace = runpy.run_path(str(path))
        except Exception as e:  # a user's Python file can raise anything
            raise ConfigError(f"config file '{path}' raised {type(e).__name__}: {e}") from None
        if "config" not in namespace:
            raise ConfigError(f"config file '{path}' must define a dict named 'config'")
        data = namespace["config"]
    else:
        raise ConfigError(f"config file '{path}': unknown format '{path.suffix}'; allowed: .yaml, .yml, .py")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`; nested dicts merge, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_global(data: dict[str, Any]) -> dict[str, Any]:
    """Merges the `$global` section into every section whose schema declares the key (section values win).

    OneRL's `$global` namespace: `$global: {seed: 3}` sets `train.seed`; a key that no section declares is an error.
    """
    data = dict(data)
    shared = data.pop(GLOBAL_KEY, None) or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"config key '{GLOBAL_KEY}' must be a mapping, got {shared!r}")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for key, value in shared.items():
        targets = [name for name in sections if key in _field_names(_section_type(name, data))]
        if not targets:
            raise ConfigError(f"config key '{GLOBAL_KEY}.{key}' matches no field of any section")
        for name in targets:
            current = data.get(name) or {}
            if not isinstance(current, dict):
                continue  # reported as a type error when the section is converted
            data[name] = deep_merge({key: value}, current)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as a YAML scalar)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{text}': expected key.sub=value, e.g. --set algo.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        data = deep_merge(data, nested)
    return data


def build(data: dict[str, Any], source: str = "config") -> Config:
    """Converts a plain dict into the typed `Config`, reporting the first problem as a `ConfigError`."""
    try:
        return _convert(Config, data, "", _section_type)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> Config:
    """The whole loading path: file -> `$global` -> `--set` -> `--seed` -> typed Config -> checked (the rules of
    `jaxrl_dist.config.plan` that the config alone decides)."""
    from jaxrl_dist.config.plan import plan

    data = apply_global(read_file(path))
    data = apply_overrides(data, overrides or [])
    if seed is not None:
        data = deep_merge(data, {"train": {"seed": seed}})
    cfg = build(data, source=str(path))
    try:
        plan(cfg)
        _check_torso(cfg)
        _check_tracking(cfg)
        _check_wrappers(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def _check_tracking(cfg: Config) -> None:
    """`log.wandb` names known settings, and wandb is installed where it is set."""
    if cfg.log.wandb is not None:
        from jaxrl_dist.io.tracking import check_tracking

        check_tracking(cfg.log.wandb)


def _check_wrappers(cfg: Config) -> None:
    if not cfg.env.wrappers:
        return
    from jaxrl_dist.envs.wrappers import parse_wrappers

    try:
        parse_wrappers(cfg.env.wrappers)
    except UserError as e:
        raise ConfigError(str(e)) from None


def _check_torso(cfg: Config) -> None:
    """`network.torso` names a built-in torso or an importable flax Module taking `network.kwargs`."""
    from jaxrl_dist.networks.torsos import BUILTIN_TORSOS

    torso = cfg.network.torso
    if torso in BUILTIN_TORSOS and not cfg.network.kwargs:
        return
    if torso in BUILTIN_TORSOS:
        raise ConfigError(f"config key 'network.kwargs' is only for a custom torso; '{torso}' takes network.hidden "
                          f"and network.activation")
    from jaxrl_dist.networks import resolve_torso  # imports flax (and a custom torso's module)

    try:
        resolve_torso(torso, cfg.network.kwargs)
    except UserError as e:
        raise ConfigError(f"config key 'network.torso': {e}") from None


# ----------------------------------------------------------------------------------------------- conversion


def _section_type(name: str, data: dict[str, Any]) -> Any:
    """The class of a top-level section; `algo` is chosen by its `name` key."""
    if name == "algo":  # the class the algorithm's definition registers (a user's: importing it imports JAX)
        from jaxrl_dist.algos import resolve_algorithm
        from jaxrl_dist.plugins import is_plugin_path

        algo = data.get("algo") if isinstance(data.get("algo"), dict) else {}
        algo_name = (algo or {}).get("name", "dqn")
        try:
            return resolve_algorithm(algo_name).config
        except UserError as e:  # a built-in's message names the key already
            plugin = isinstance(algo_name, str) and is_plugin_path(algo_name)
            raise ConfigError(f"config key 'algo.name': {e}" if plugin else str(e)) from None
    hints = typing.get_type_hints(Config)
    return hints[name]


def _field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def _convert(cls: Any, data: Any, prefix: str, pick: Any = None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix[:-1]}' must be a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if f"{prefix}{key}" in RENAMED:
            raise ConfigError(f"config key '{prefix}{key}' was replaced by {RENAMED[prefix + key]}")
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            raise ConfigError(f"config key '{prefix}{key}' is unknown; {hint}allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = prefix + name
        typ = pick(name, data) if pick is not None else hints[name]
        if dataclasses.is_dataclass(typ):
            values[name] = _convert(typ, data[name] if data[name] is not None else {}, key + ".")
        else:
            values[name] = _check_value(typ, data[name], key, f.metadata)
    return cls(**values)


def _describe(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(typ))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(typ))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(typ)[0])}"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", dict: "a mapping"}.get(
        typ, str(typ)
    )


def _coerce(typ: Any, value: Any) -> Any:
    """Returns the value as `typ`, or raises ValueError. Lenient only where YAML is surprising (`1e-3` is a str)."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value in typing.get_args(typ):
            return value
        raise ValueError
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(typ):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(arg, value)
            except ValueError:
                pass
        raise ValueError
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return tuple(_coerce(typing.get_args(typ)[0], v) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if typ is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError
    if typ is float:
        if isinstance(value, str):
            number = float(value)  # ValueError if it is no number
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            raise ValueError
        if not math.isfinite(number):  # YAML's .inf and .nan, 1e400: no key has a use for them (issue 17)
            raise ValueError
        return number
    if typ is str and isinstance(value, str):
        return value
    if typ is dict and isinstance(value, dict):
        return dict(value)
    if typ is list and isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError


def _check_value(typ: Any, value: Any, key: str, meta: Any) -> Any:
    try:
        out = _coerce(typ, value)
    except ValueError:
        raise ConfigError(f"config key '{key}': value {value!r} is not allowed; allowed: {_describe(typ)}") from None
    bounds = {"ge": (">=", lambda a, b: a >= b), "gt": (">", lambda a, b: a > b),
              "le": ("<=", lambda a, b: a <= b), "lt": ("<", lambda a, b: a < b)}
    checks = [(sym, ok, meta[name]) for name, (sym, ok) in bounds.items() if name in meta]
    numbers = out if isinstance(out, tuple) else (out,)
    for number in numbers:
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if not all(ok(number, limit) for _, ok, limit in checks):
                allowed = " and ".join(f"{sym} {limit:g}" for sym, _, limit in checks)
                raise ConfigError(f"config key '{key}': value {value!r} is out of range; allowed: {allowed}")
    return out
