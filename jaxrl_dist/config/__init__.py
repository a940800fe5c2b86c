"""Typed configs: schema, loading (YAML / Python, `$global`, `--set`), and derived sizes."""

from jaxrl_dist.config.derive import Sizes, derive, validate
from jaxrl_dist.config.load import build, load_config, read_file
from jaxrl_dist.config.schema import Config, to_dict

__all__ = ["Config", "Sizes", "build", "derive", "load_config", "read_file", "to_dict", "validate"]
