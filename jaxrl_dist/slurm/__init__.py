"""Slurm support: sweep expansion (`sweep`) and the sbatch script of a job array (`script`); see `jaxrl_dist.launch`."""

from jaxrl_dist.slurm.script import DONE_FILE, MANIFEST_FILE, PREEMPT_EXIT, SCRIPT_FILE, JobSpec, manifest, render
from jaxrl_dist.slurm.sweep import Combination, Sweep, SweepError, expand, parse_seeds, parse_sweep

__all__ = ["DONE_FILE", "MANIFEST_FILE", "PREEMPT_EXIT", "SCRIPT_FILE", "Combination", "JobSpec", "Sweep",
           "SweepError", "expand", "manifest", "parse_seeds", "parse_sweep", "render"]
