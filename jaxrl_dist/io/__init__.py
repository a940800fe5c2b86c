"""The run's files and console: experiment directories, metrics, checkpoints, progress display."""

from jaxrl_dist.io.checkpoint import FORMAT_VERSION, Checkpointer
from jaxrl_dist.io.experiment import prepare_experiment_dir, resolve_experiment_dir, write_config_snapshot
from jaxrl_dist.io.metrics import MetricsWriter, read_metrics
from jaxrl_dist.io.progress import Progress

__all__ = [
    "FORMAT_VERSION",
    "Checkpointer",
    "MetricsWriter",
    "Progress",
    "prepare_experiment_dir",
    "read_metrics",
    "resolve_experiment_dir",
    "write_config_snapshot",
]
