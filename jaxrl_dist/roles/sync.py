"""What the roles share: version-stamped parameters, and the counters actors and the learner pace each other by
(the replay ratio, or one update per segment)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any


@dataclasses.dataclass
class Counters:
    """Where a run starts: zero for a new run, the checkpoint's counters on resume."""

    env_steps: int = 0  # this group's (all of them without groups)
    updates: int = 0
    replay_restored: bool = False
    peer_steps: int = 0  # the other groups' env steps (with groups)


class ParamStore:
    """The newest actor parameters, one copy on each actor device, and their version (the learner updates done when
    they were computed).

    The learner publishes a version only once its parameters are computed and copied (`jaxrl_dist.roles.learner`),
    so an actor that takes them never waits for a learner call in flight. Actors read `version` every step (an
    attribute read, no lock) and take the copy on their own device when it moved; the threads of one actor device
    share that copy. An actor whose parameters lag the learner by more than `max_staleness` updates waits in
    `wait_newer` until fresher ones are published.
    """

    def __init__(self, version: int) -> None:
        self._latest: tuple[dict[Any, Any], int] = ({}, version)
        self._cond = threading.Condition()

    @property
    def version(self) -> int:
        return self._latest[1]

    def publish(self, copies: dict[Any, Any], version: int) -> None:
        """Makes `copies` (actor device -> parameters, computed) the newest, as `version`; an older version than
        the store's is dropped (versions only go up)."""
        with self._cond:
            if version < self._latest[1] and self._latest[0]:
                return
            # One tuple store keeps params and version consistent for lock-free readers of `latest()`.
            self._latest = (copies, version)
            self._cond.notify_all()

    def latest(self, device: Any) -> tuple[Any, int]:
        """The newest parameters on `device` and their version."""
        copies, version = self._latest
        return copies[device], version

    def wait_newer(self, min_version: int, timeout: float) -> bool:
        """Waits until `version >= min_version`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.version >= min_version, timeout=timeout)


class Limiter:
    """The run's counters that actors and the learner pace each other by, and the condition they wait on.

    A data path's limiter says when each side may go on (`learner_may_run`, `actor_may_run`); the counters are the
    same for all: env steps per actor (each actor writes its own slot, lock-free), learner updates, and the other
    groups' env steps.

    Args:
        env_steps, updates: the counters at the start (non-zero when resuming).
        actors: actor threads (each counts its env steps in its own slot).
        peer_steps: env steps of the other groups (with groups; kept current by the group exchange).
    """

    def __init__(self, env_steps: int = 0, updates: int = 0, actors: int = 1, peer_steps: int = 0) -> None:
        self.base_steps, self.base_updates = env_steps, updates
        # A fixed-size list, one slot per actor: readers sum it while actors write their own slot, lock-free.
        self.actor_steps = [0] * actors
        self.updates = updates
        self.peer_steps = peer_steps
        self.finished = False  # set when the actors reached the env-step budget
        self._cond = threading.Condition()

    @property
    def env_steps(self) -> int:
        """This process's env steps (its group's, with groups)."""
        return self.base_steps + sum(self.actor_steps)

    @property
    def total_steps(self) -> int:
        """The run's env steps: this group's plus the others' as of the last group exchange."""
        return self.env_steps + self.peer_steps

    def add_env_steps(self, actor: int, steps: int) -> None:
        self.actor_steps[actor] += steps  # one writer per slot

    def add_updates(self, k: int) -> None:
        with self._cond:
            self.updates += k
            self._cond.notify_all()

    def learner_may_run(self, k: int) -> bool:
        """Whether the learner may run `k` more updates now."""
        raise NotImplementedError

    def actor_may_run(self) -> bool:
        """Whether an actor may step its envs now."""
        raise NotImplementedError

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Waits until `predicate()` holds or `timeout` passes; returns the predicate."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


class RatioLimiter(Limiter):
    """The replay path's pacing: learner updates per env step held at `ratio`, in both directions.

    The learner may run `k` more updates once `updates + k <= base_updates + ratio * (env_steps - start)`, where
    `start` is the env step at which learning may begin. Actors pause while `env_steps` runs more than `slack`
    steps ahead of what the learner's updates account for. After the last env step the learner is released to
    finish its remaining updates.

    Args:
        ratio: updates per env step.
        start: env steps before the first update (learning_starts, counted from a resume point).
        slack: env steps actors may run ahead.
        env_steps, updates, actors, peer_steps: as for `Limiter`.
        max_updates: the most updates in all (with groups: the count every group runs); None: no cap.
    """

    def __init__(
        self, ratio: float, start: int, slack: int, env_steps: int = 0, updates: int = 0, actors: int = 1,
        max_updates: int | None = None, peer_steps: int = 0,
    ) -> None:
        super().__init__(env_steps, updates, actors, peer_steps)
        self.ratio, self.start, self.slack = ratio, start, slack
        self.max_updates = max_updates

    def updates_at(self, env_steps: int) -> int:
        """Updates the ratio allows at `env_steps` of this process."""
        return self.base_updates + int(self.ratio * max(0, env_steps - self.start))

    def allowed_updates(self) -> int:
        """Updates the ratio allows at the current env-step count (and the cap)."""
        allowed = self.updates_at(self.env_steps)
        return allowed if self.max_updates is None else min(allowed, self.max_updates)

    def learner_may_run(self, k: int) -> bool:
        return self.updates + k <= self.allowed_updates()

    def actor_may_run(self) -> bool:
        ahead = self.env_steps - self.start - (self.updates - self.base_updates) / self.ratio
        return ahead <= self.slack or self.finished


class SegmentLimiter(Limiter):
    """The segment path's pacing: the learner runs one update per segment handed over; actors are paced by their
    parameter versions (see `jaxrl_dist.roles.segments.SegmentFeed`), so they may always step. `segments` counts
    the segments handed over (from the resume point's update count), so `updates < segments` means one is waiting."""

    def __init__(self, env_steps: int = 0, updates: int = 0, actors: int = 1, peer_steps: int = 0) -> None:
        super().__init__(env_steps, updates, actors, peer_steps)
        self.segments = updates

    def learner_may_run(self, k: int) -> bool:
        return self.updates + k <= self.segments

    def actor_may_run(self) -> bool:
        return True

    def add_segment(self) -> None:
        with self._cond:
            self.segments += 1
            self._cond.notify_all()
