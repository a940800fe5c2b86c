"""Host replay: partitioned ring buffer, n-step writer, and the pipelined sampler."""

from jaxrl_dist.replay.buffer import Partition, ReplayBuffer
from jaxrl_dist.replay.nstep import NStepWriter

__all__ = ["NStepWriter", "Partition", "ReplayBuffer"]
