"""A real single-node Slurm cluster for the tests (session scope), and waits on its jobs with timeouts.

The fixture installs the Debian packages when they are missing (as root, like CI), starts the daemons with
`slurm/local_cluster.sh start` (which reuses a cluster that is already up), exports SLURM_CONF for every command the
tests run, and stops the cluster at the end if it started it. It skips, printing why, only when the packages
cannot be installed or the daemons cannot be started (not root); a cluster that fails to start is a test error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_runs import ROOT

SCRIPT = ROOT / "slurm" / "local_cluster.sh"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "libpmix2", "libpmix-dev")
STATE_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/jaxrl_slurm"))
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 120


def _installed() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))


def _install() -> str | None:
    """Installs the packages with apt-get; returns why it could not, or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Slurm is not installed and cannot be (needs root and apt-get): apt-get install {' '.join(PACKAGES)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' did not finish within {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"'{' '.join(cmd)}' failed: {tail}"
    return None


def _cluster(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], check=False, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, env={**os.environ, "SLURM_LOCAL_DIR": str(STATE_DIR)})


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Yields the cluster's slurm.conf once the node takes jobs; SLURM_CONF points to it meanwhile."""
    if not _installed():
        why = _install()
        if why is not None:
            print(f"\nskipping the Slurm tests: {why}", flush=True)
            pytest.skip(why)
    was_running = _cluster("status").returncode == 0
    if not was_running and os.geteuid() != 0:
        why = "starting munged, slurmctld and slurmd needs root (or start slurm/local_cluster.sh as root first)"
        print(f"\nskipping the Slurm tests: {why}", flush=True)
        pytest.skip(why)
    started = _cluster("start")
    if started.returncode != 0:
        pytest.fail(f"the local Slurm cluster did not start: {started.stderr.strip() or started.stdout.strip()}")
    conf = STATE_DIR / "slurm.conf"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        if not was_running:
            _cluster("stop")


def slurm(*args: str, timeout: float = 30) -> str:
    """Runs a Slurm command (squeue, scontrol, scancel) and returns its stdout; fails the test on an error."""
    done = subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.5) -> None:
    """Polls `predicate` until it is true; fails the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def job_states(job: str) -> dict[str, str]:
    """`{job id or array task id: JobState}` from `scontrol show job` (there is no sacct without accounting)."""
    states = {}
    for line in slurm("scontrol", "show", "job", "-o", job).splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task = fields.get("ArrayTaskId")
        key = f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]
        states[key] = fields["JobState"]
    return states


def wait_job(job: str, timeout: float) -> dict[str, str]:
    """Waits until every task of `job` left the queue (requeued tasks count as queued); returns their end states."""
    wait_for(lambda: not slurm("squeue", "-h", "-j", job).strip(), timeout, f"Slurm job {job} to finish")
    return job_states(job)
