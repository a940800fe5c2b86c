"""The typed, frozen config schema: one dataclass per section, every field documented.

A field's metadata carries its documentation and its range (`ge`, `gt`, `le`); `Literal` types give the allowed
values. `jaxrl_dist.config.load` turns YAML / Python dicts into these classes and reports any mismatch as a
one-line `ConfigError`; `jaxrl_dist.config.plan` checks the sizes and rules that tie sections together. Each
algorithm's own section lives with the algorithm (`jaxrl_dist/algos/<name>/config.py`), built with `fld` from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Protocol, Union



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

    id: str = fld("CartPole-v1", "EnvPool task id, `gymnasium:ID`, or `package.module:Name` (a BaseEnv or gymnasium.Env "
                                 "subclass, or a function returning an env).")
    backend: Literal["auto", "envpool", "gymnasium", "custom"] = fld("auto", "Which env backend; auto picks from id.")
    num_envs: int = fld(8, "Environments per actor.", ge=1)
    batch_size: int = fld(0, "Envs returned per recv (EnvPool async mode); 0 means num_envs (synchronous).", ge=0)
    num_threads: int = fld(0, "EnvPool worker threads per actor; 0 means min(cpu count, num_envs).", ge=0)
    max_episode_steps: int = fld(0, "Time limit (truncation) in env steps; 0 keeps the env's own.", ge=0)
    kwargs: dict = fld({}, "Extra keyword arguments for envpool.make, gymnasium.make, or the env's class or function.")
    vector: Literal["inline", "subprocess"] = fld(
        "inline", "Python envs (custom, gymnasium): step them in the actor's thread, or in `workers` subprocesses.")
    workers: int = fld(0, "Worker processes per vectorized env with vector=subprocess; 0 means min(cpu count, "
                          "num_envs).", ge=0)
    wrappers: list = fld([], "Env wrappers, first innermost: `frame_stack: K`, or `package.module:Class` of a VecEnvWrapper.")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The function approximator: a torso and the algorithm's head."""

    torso: str = fld(
        "mlp", "Torso: `mlp`, `nature_cnn` (the Nature-DQN CNN, for [C, 84, 84] uint8 frames) or "
        "`package.module:Class` (your own flax Module, see docs/extending.md)."
    )
    hidden: tuple[int, ...] = fld((256, 256), "Hidden layer sizes of the MLP (or of the MLP after the CNN).", ge=1)
    activation: Literal["relu", "tanh", "gelu", "silu"] = fld("relu", "Activation between layers.")
    dueling: bool = fld(False, "Dueling value/advantage head (DQN family).")
    kwargs: dict = fld({}, "Keyword arguments of a custom torso class (network.torso: package.module:Class).")
    normalize_obs: bool = fld(False, "Standardise observations with running statistics kept in the learner state "
                                     "(float observations only; the statistics are saved in checkpoints and built "
                                     "into exports).")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The host replay buffer and its sampler."""

    capacity: int = fld(100_000, "Transitions kept (split evenly between actors).", ge=1)
    batch_size: int = fld(64, "Transitions per learner update.", ge=1)
    prefetch: int = fld(2, "Batches prepared ahead and already on the learner device (async mode).", ge=1)
    samplers: int = fld(1, "Sampler threads preparing batches (async mode): more where one cannot feed the learner, as "
                           "with Atari frames and a fast accelerator (`bench replay` measures it).", ge=1)
    prioritized: bool = fld(False, "Prioritized replay: draw in proportion to (|TD error| + priority_eps)^alpha, "
                                   "weigh losses by importance weights (algorithms whose update returns "
                                   "`Prioritized` for a `PrioritizedBatch`: dqn).")
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

    count: int = fld(1, "Actor threads per actor device.", ge=1)
    devices: Union[int, str, tuple[str, ...]] = fld(
        "auto", "Devices the actors run their policy on: auto (the first device), a count N (the first N), a name "
        "(cpu:0, gpu:1, auto:N) or a list of names. The threads of one device share one parameter copy.", ge=1)


@dataclasses.dataclass(frozen=True)
class LearnerRoleConfig:
    """The learner: fused updates on one device, or data-parallel over several (one `data` mesh axis)."""

    devices: Union[int, str, tuple[str, ...]] = fld(
        "auto", "The learner's `data` mesh, each device taking batch / devices: auto (on a box of several "
        "accelerators, as many of those after the actors' as split the batch evenly; else the actors' device), a "
        "count N (N devices, after the actors' where there are enough), a name or a list of names.", ge=1)
    updates_per_call: int = fld(8, "Updates fused into one jitted call (lax.scan over prefetched batches).", ge=1)


@dataclasses.dataclass(frozen=True)
class EvaluatorRoleConfig:
    """The evaluator: its own thread in async mode (inline in serial mode), its own env instances."""

    device: str = fld("auto", "JAX device for evaluation inference: auto (the first actor device), auto:N, cpu, cpu:N, "
                              "gpu:N.")


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
    cpu_async_dispatch: bool = fld(
        True, "JAX's asynchronous dispatch on CPU devices, as a GPU always has it: a learner call returns before it "
        "computes, so the learner's Python work overlaps its computation (about 1.4x the updates/s of SAC on 2 "
        "cores). false: every call computes in its caller's thread.")
    compile_cache: Optional[str] = fld(
        None, "Folder of JAX's persistent compilation cache: a later run of the same programs loads them instead of "
        "compiling (seconds of every start on a CPU). null: off. Shared by runs and safe to delete.")
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
    num_threads: int = fld(
        0, "EnvPool threads of the evaluation envs; 0 = auto: the cores the run's training envs, actors and learner "
        "leave free, at least 1 (one per core for `python -m jaxrl_dist.evaluate`).", ge=0)
    target_return: Optional[float] = fld(None, "Stop training at the first evaluation whose mean reaches this.")
    env_seed: Optional[int] = fld(
        None, "Seed of the evaluation envs (env i: env_seed + i, the same in every evaluation); null: from train.seed.",
        ge=0,
    )
    video: bool = fld(False, "Record one episode (env 0) per evaluation as MP4 under videos/ and a GIF in TensorBoard.")
    video_fps: int = fld(30, "Frames per second of the recorded videos.", ge=1)


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Console, metrics.jsonl, TensorBoard and (optionally) Weights & Biases output."""

    root: str = fld("experiments", "Folder holding experiment directories.")
    interval_s: float = fld(2.0, "Seconds between metric lines.", gt=0.0)
    tensorboard: bool = fld(True, "Write TensorBoard events under tb/.")
    quiet: bool = fld(False, "Plain progress lines instead of a live bar (also when stdout is not a TTY).")
    profile: bool = fld(False, "Record every role's spans and write `trace_<start>.json` (Chrome trace events, Perfetto).")
    jax_profile_s: float = fld(0.0, "Seconds of jax.profiler trace (XLA ops) once learning starts, under jax_profile/; 0: off.", ge=0.0)
    wandb: Optional[dict] = fld(
        None, "Weights & Biases tracking: a mapping of project, entity, group, tags, mode (online, offline, disabled); "
        "null: off. Needs the `wandb` extra. Metrics, the config and evaluation videos go to one W&B run per "
        "experiment, continued by --resume and Slurm requeues; W&B's files go to `<experiment>/wandb/`.")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under checkpoints/."""

    interval: int = fld(50_000, "Env steps between checkpoints; 0 saves only at the end.", ge=0)
    keep: int = fld(3, "Checkpoints kept on disk.", ge=1)
    save_replay: bool = fld(False, "Store the replay buffer in checkpoints so --resume restores it.")


class AlgoConfig(Protocol):
    """What every algorithm's config section has; the section's class is the one its `AlgorithmDef` registers
    (`jaxrl_dist.algos`), chosen by `algo.name` when a config is loaded."""

    @property
    def name(self) -> str: ...


def default_algo_config() -> Any:
    """The `algo` section when a config leaves it out: DQN's defaults. Imported here, not at the top, since the
    algorithms' config classes are built on this module's `fld`."""
    from jaxrl_dist.algos.dqn.config import DQNConfig

    return DQNConfig()


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run."""

    env: EnvConfig = section(EnvConfig)
    network: NetworkConfig = section(NetworkConfig)
    algo: AlgoConfig = dataclasses.field(default_factory=lambda: default_algo_config(), metadata={
        "doc": "The algorithm's own section, chosen by its `name` (the class its AlgorithmDef registers)."})
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
