"""The threads of the data-flow graph (actor, sampler, learner, evaluator) and the driver that runs them."""

from jaxrl_dist.roles.runner import RunResult, train

__all__ = ["RunResult", "train"]
