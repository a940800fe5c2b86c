"""Host replay: partitioned ring buffer, n-step writer, prioritized sampling, frames stored once, and the pipelined
sampler."""

from jaxrl_dist.replay.buffer import Partition, ReplayBuffer
from jaxrl_dist.replay.frames import FramePartition, FrameWriter
from jaxrl_dist.replay.nstep import NStepWriter
from jaxrl_dist.replay.prioritized import PrioritizedReplay
from jaxrl_dist.replay.sumtree import SumTree

__all__ = ["FramePartition", "FrameWriter", "NStepWriter", "Partition", "PrioritizedReplay", "ReplayBuffer", "SumTree"]
