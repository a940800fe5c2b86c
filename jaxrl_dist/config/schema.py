"""The typed, frozen config schema: one dataclass per section, every field documented.

A field's metadata carries its documentation and its range (`ge`, `gt`, `le`); `Literal` types give the allowed
values. `jaxrl_dist.config.load` turns YAML / Python dicts into these classes and reports any mismatch as a
one-line `ConfigError`; `jaxrl_dist.config.derive.validate` checks the sizes that depend on each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

from jaxrl_dist.errors import ConfigError


def fld(default: Any, doc: str, **limits: float) -> Any:
    """A dataclass field with a doc string and numeric limits (ge, gt, le, lt) in its metadata."""
    meta = {"doc": doc, **limits}
    if isinstance(default, (list, dict)):  # mutable defaults need a factory
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(default_cls: type) -> Any:
    return dataclasses.field(default_factory=default_cls, metadata={"doc": default_cls.__doc__ or ""})


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The training environments (each actor owns one vectorized env of `num_envs`)."""

    id: str = fld("CartPole-v1", "EnvPool task id, `gymnasium:ID`, or `package.module:Class` (a BaseEnv subclass).")
    backend: Literal["auto", "envpool", "gymnasium", "custom"] = fld("auto", "Which env backend; auto picks from id.")
    num_envs: int = fld(8, "Environments per actor.", ge=1)
    batch_size: int = fld(0, "Envs returned per recv (EnvPool async mode); 0 means num_envs (synchronous).", ge=0)
    num_threads: int = fld(0, "EnvPool worker threads per actor; 0 means min(cpu count, num_envs).", ge=0)
    max_episode_steps: int = fld(0, "Time limit (truncation) in env steps; 0 keeps the env's own.", ge=0)
    kwargs: dict = fld({}, "Extra keyword arguments for envpool.make or the env constructor.")
    wrappers: list = fld([], "Env wrappers, first innermost: `frame_stack: K`, or `package.module:Class` of a VecEnvWrapper.")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The function approximator: a torso and the algorithm's head."""

    torso: str = fld(
        "mlp", "Torso: `mlp`, `nature_cnn` (for [C,84,84] frames) or `package.module:Class` (a flax Module)."
    )
    hidden: tuple[int, ...] = fld((256, 256), "Hidden layer sizes of the MLP (or of the MLP after the CNN).", ge=1)
    activation: Literal["relu", "tanh", "gelu", "silu"] = fld("relu", "Activation between layers.")
    dueling: bool = fld(False, "Dueling value/advantage head (DQN family).")
    kwargs: dict = fld({}, "Keyword arguments of a custom torso class (network.torso: package.module:Class).")
    normalize_obs: bool = fld(False, "Standardise observations with running statistics kept in the learner state.")


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """DQN / Double DQN hyperparameters."""

    name: Literal["dqn"] = fld("dqn", "Algorithm name.")
    double: bool = fld(True, "Double DQN: the online network picks the bootstrap action.")
    lr: float = fld(1e-3, "Adam learning rate.", gt=0.0)
    adam_eps: float = fld(1e-8, "Adam epsilon.", gt=0.0)
    max_grad_norm: float = fld(10.0, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    n_step: int = fld(1, "n-step returns (bootstrapping through truncations).", ge=1)
    loss: Literal["huber", "mse"] = fld("huber", "TD loss.")
    target_update: Literal["period", "polyak"] = fld("period", "Hard copy every target_period updates, or Polyak.")
    target_period: int = fld(500, "Updates between hard target copies (target_update=period).", ge=1)
    tau: float = fld(0.005, "Polyak coefficient per update (target_update=polyak).", gt=0.0, le=1.0)
    eps_start: float = fld(1.0, "Initial exploration epsilon.", ge=0.0, le=1.0)
    eps_end: float = fld(0.05, "Final exploration epsilon.", ge=0.0, le=1.0)
    eps_decay_steps: int = fld(10_000, "Env steps over which epsilon decays linearly.", ge=1)

    def check(self) -> None:
        """Rules between fields (called by `derive.validate`); raises ConfigError."""
        if self.eps_end > self.eps_start:
            raise ConfigError(
                f"config key 'algo.eps_end': value {self.eps_end} is above algo.eps_start={self.eps_start}; "
                f"allowed: <= {self.eps_start}"
            )


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The host replay buffer and its sampler."""

    capacity: int = fld(100_000, "Transitions kept (split evenly between actors).", ge=1)
    batch_size: int = fld(64, "Transitions per learner update.", ge=1)
    prefetch: int = fld(2, "Batches prepared ahead and already on the learner device (async mode).", ge=1)
    prioritized: bool = fld(False, "Prioritized replay: draw in proportion to (|TD error| + priority_eps)^alpha, "
                                   "weigh losses by importance weights (algorithms that return a `priority` metric).")
    alpha: float = fld(0.6, "Priority exponent (0: uniform draws).", ge=0.0)
    beta_start: float = fld(0.4, "Importance-sampling exponent at the start (prioritized).", ge=0.0, le=1.0)
    beta_end: float = fld(1.0, "Importance-sampling exponent after beta_steps (prioritized).", ge=0.0, le=1.0)
    beta_steps: int = fld(0, "Env steps over which beta goes linearly from beta_start to beta_end; 0: "
                             "train.total_env_steps.", ge=0)
    priority_eps: float = fld(1e-6, "Added to |TD error| so that no stored item has priority 0.", gt=0.0)
    frame_dedup: bool = fld(False, "Store each frame of [C, H, W] uint8 frame stacks once and rebuild the stacks "
                                   "when sampling (Atari: about 7.5 KB instead of 56 KB per transition).")


@dataclasses.dataclass(frozen=True)
class ActorRoleConfig:
    """Actor threads: each steps its own vectorized env with the newest parameters it has."""

    count: int = fld(1, "Actor threads.", ge=1)
    device: str = fld("auto", "JAX device for inference: auto, auto:N, cpu, cpu:N, gpu:N.")


@dataclasses.dataclass(frozen=True)
class LearnerRoleConfig:
    """The learner: fused updates on one device, or data-parallel over several (one `data` mesh axis)."""

    device: str = fld(
        "auto", "JAX device for updates: auto, auto:N, cpu, cpu:N, gpu:N (the first, with num_devices > 1)."
    )
    num_devices: int = fld(
        1, "Learner devices: `device` and the next ones of its platform; each takes batch_size / num_devices.", ge=1
    )
    updates_per_call: int = fld(8, "Updates fused into one jitted call (lax.scan over prefetched batches).", ge=1)


@dataclasses.dataclass(frozen=True)
class EvaluatorRoleConfig:
    """The evaluator: its own thread in async mode (inline in serial mode), its own env instances."""

    device: str = fld("auto", "JAX device for evaluation inference: auto, auto:N, cpu, cpu:N, gpu:N.")


@dataclasses.dataclass(frozen=True)
class GroupsConfig:
    """Groups: N copies of the actor+replay+learner graph, one per MPI rank (`mpirun -n N`), kept in sync by mpi4jax."""

    count: int = fld(1, "Groups; more than 1 needs the `mpi` extra and `mpirun -n COUNT` (or srun) around train.", ge=1)
    sync: Literal["grads", "params"] = fld(
        "grads", "grads: gradients averaged over groups in every update; params: parameters averaged every interval."
    )
    interval: int = fld(
        64, "Updates between parameter averages (sync=params): the most any group's parameters drift from the others.",
        ge=1,
    )
    overlap: bool = fld(
        False, "sync=params: average in the background while training on (at most one interval stale); the groups' "
        "states are identical only at the end."
    )
    timeout_s: float = fld(300.0, "Seconds a group waits in a collective for its peers before it aborts the job.", gt=0.0)


@dataclasses.dataclass(frozen=True)
class RolesConfig:
    """The data-flow graph on one node: actors -> replay -> learner -> actors, plus the evaluator."""

    mode: Literal["async", "serial"] = fld("async", "async: role threads; serial: one deterministic thread.")
    actor: ActorRoleConfig = section(ActorRoleConfig)
    learner: LearnerRoleConfig = section(LearnerRoleConfig)
    evaluator: EvaluatorRoleConfig = section(EvaluatorRoleConfig)
    groups: GroupsConfig = section(GroupsConfig)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The run's budget and the relation between sampling and learning."""

    total_env_steps: int = fld(100_000, "Env steps (over all actors) after which training stops.", ge=1)
    learning_starts: int = fld(1_000, "Env steps collected before the first update.", ge=0)
    replay_ratio: float = fld(0.25, "Learner updates per env step, held in both directions.", gt=0.0)
    ratio_slack: int = fld(0, "Env steps actors may run ahead of the ratio; 0 = auto: ceil(K / replay_ratio) + 4 env batches per actor.", ge=0)
    max_staleness: int = fld(64, "Most learner updates an actor's parameters may lag before it waits.", ge=0)
    seed: int = fld(0, "Seed of networks, exploration and env instances.", ge=0)
    reward_scale: float = fld(1.0, "Rewards are multiplied by this for learning (reported returns are unscaled).", gt=0.0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation with the greedy / deterministic policy on separate env instances."""

    interval: int = fld(10_000, "Env steps between evaluations; 0 disables evaluation.", ge=0)
    episodes: int = fld(10, "Episodes per evaluation (run in parallel, one per env).", ge=1)
    target_return: Optional[float] = fld(None, "Stop training at the first evaluation whose mean reaches this.")
    env_seed: Optional[int] = fld(
        None, "Seed of the evaluation envs (env i: env_seed + i, the same in every evaluation); null: from train.seed.",
        ge=0,
    )
    video: bool = fld(False, "Record one episode (env 0) per evaluation as MP4 under videos/ and a GIF in TensorBoard.")
    video_fps: int = fld(30, "Frames per second of the recorded videos.", ge=1)


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Console, metrics.jsonl and TensorBoard output."""

    root: str = fld("experiments", "Folder holding experiment directories.")
    interval_s: float = fld(2.0, "Seconds between metric lines.", gt=0.0)
    tensorboard: bool = fld(True, "Write TensorBoard events under tb/.")
    quiet: bool = fld(False, "Plain progress lines instead of a live bar (also when stdout is not a TTY).")
    profile: bool = fld(False, "Record every role's spans and write trace_<start>.json (Chrome trace events, Perfetto).")
    jax_profile_s: float = fld(0.0, "Seconds of jax.profiler trace (XLA ops) once learning starts, under jax_profile/; 0: off.", ge=0.0)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under checkpoints/."""

    interval: int = fld(50_000, "Env steps between checkpoints; 0 saves only at the end.", ge=0)
    keep: int = fld(3, "Checkpoints kept on disk.", ge=1)
    save_replay: bool = fld(False, "Store the replay buffer in checkpoints so --resume restores it.")


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (continuous actions)."""

    name: Literal["sac"] = fld("sac", "Algorithm name.")
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    n_step: int = fld(1, "n-step returns (bootstrapping through truncations).", ge=1)
    actor_lr: float = fld(1e-3, "Adam learning rate of the policy.", gt=0.0)
    critic_lr: float = fld(1e-3, "Adam learning rate of the twin Q critics.", gt=0.0)
    alpha_lr: float = fld(1e-3, "Adam learning rate of the entropy temperature.", gt=0.0)
    init_alpha: float = fld(1.0, "Initial entropy temperature.", gt=0.0)
    target_entropy: Optional[float] = fld(None, "Entropy the temperature is tuned to; null: -action_dim.")
    tau: float = fld(0.005, "Polyak coefficient of the target critics per update.", gt=0.0, le=1.0)
    max_grad_norm: float = fld(0.0, "Global gradient-norm clip; 0 disables it.", ge=0.0)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (on-policy: trajectory segments, no replay)."""

    name: Literal["ppo"] = fld("ppo", "Algorithm name.")
    segment_length: int = fld(32, "Env steps per actor env in one segment (T); one learner update per segment.", ge=1)
    gamma: float = fld(0.99, "Discount factor.", ge=0.0, le=1.0)
    gae_lambda: float = fld(0.95, "GAE lambda.", ge=0.0, le=1.0)
    lr: float = fld(3e-4, "Adam learning rate.", gt=0.0)
    anneal_lr: bool = fld(False, "Decay the learning rate linearly to 0 over train.total_env_steps.")
    adam_eps: float = fld(1e-5, "Adam epsilon.", gt=0.0)
    max_grad_norm: float = fld(0.5, "Global gradient-norm clip; 0 disables it.", ge=0.0)
    epochs: int = fld(4, "Passes over each segment.", ge=1)
    num_minibatches: int = fld(4, "Minibatches per epoch (split along the segment's time axis).", ge=1)
    clip_eps: float = fld(0.2, "Clip range of the probability ratio.", gt=0.0)
    value_clip_eps: float = fld(0.2, "Clip range of the value update around the old value; 0 disables it.", ge=0.0)
    vf_coef: float = fld(0.5, "Value loss coefficient.", ge=0.0)
    ent_coef: float = fld(0.0, "Entropy bonus coefficient.", ge=0.0)
    normalize_advantages: bool = fld(True, "Standardise advantages per minibatch.")

    def check(self) -> None:
        """Rules between fields (called by `derive.validate`); raises ConfigError."""
        if self.segment_length % self.num_minibatches:
            raise ConfigError(
                f"config key 'algo.num_minibatches': value {self.num_minibatches} does not divide "
                f"algo.segment_length={self.segment_length} (minibatches split the time axis); allowed: a divisor"
            )


ALGO_CONFIGS: dict[str, type] = {"dqn": DQNConfig, "sac": SACConfig, "ppo": PPOConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run."""

    env: EnvConfig = section(EnvConfig)
    network: NetworkConfig = section(NetworkConfig)
    algo: DQNConfig = section(DQNConfig)
    replay: ReplayConfig = section(ReplayConfig)
    roles: RolesConfig = section(RolesConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    log: LogConfig = section(LogConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)


def to_dict(obj: Any) -> Any:
    """A config (or section) as plain dicts, lists and scalars, in field order (for YAML snapshots and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
