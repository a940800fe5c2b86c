"""Benchmarks: `python -m jaxrl_dist.bench throughput|solve [--json]`."""
