"""Typed configs: schema, loading (YAML / Python, `$global`, `--set`), and the run's plan (derived sizes, rules)."""

from jaxrl_dist.config.load import build, load_config, read_file
from jaxrl_dist.config.plan import Plan, eval_seed, plan
from jaxrl_dist.config.schema import Config, to_dict

__all__ = ["Config", "Plan", "build", "eval_seed", "load_config", "plan", "read_file", "to_dict"]
